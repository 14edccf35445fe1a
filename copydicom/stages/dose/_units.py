"""Unit normalisation for dose values (UCUM, PS3.16 CID 82 and vendor variants).

Each field of a dose document names its unit (``_mgy``, ``_gy_m2``, ``_mgy_cm``,
``_s``...).  :func:`convert` scales a value given in the unit code of the
report to that target unit.  Unit codes are compared after removing ``.``,
``*``, ``^``, ``·`` and blanks, so ``Gy.m2``, ``Gym2``, ``Gy*m^2`` are one
unit; case is kept (``mBq`` and ``MBq`` differ).
"""

from __future__ import annotations

import re

#: Factor from a unit (normalised spelling) to each target unit.
_FACTORS: dict[str, dict[str, float]] = {
    "gy_m2": {"Gym2": 1.0, "dGycm2": 1e-5, "cGycm2": 1e-6, "mGycm2": 1e-7, "uGym2": 1e-6,
              "Gycm2": 1e-4, "uGycm2": 1e-10, "mGym2": 1e-3, "dGym2": 0.1, "cGym2": 0.01},
    "mgy": {"mGy": 1.0, "Gy": 1000.0, "dGy": 100.0, "cGy": 10.0, "uGy": 1e-3, "µGy": 1e-3},
    "mgy_cm": {"mGycm": 1.0, "mGymm": 0.1, "Gycm": 1000.0, "cGycm": 10.0, "mGym": 100.0},
    "s": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0, "h": 3600.0},
    "ms": {"ms": 1.0, "s": 1000.0, "us": 1e-3},
    "mm": {"mm": 1.0, "cm": 10.0, "m": 1000.0},
    "kv": {"kV": 1.0, "V": 1e-3, "kVp": 1.0},
    "ma": {"mA": 1.0, "A": 1000.0, "uA": 1e-3},
    "uas": {"uAs": 1.0, "mAs": 1000.0, "As": 1e6},
    "mbq": {"MBq": 1.0, "kBq": 1e-3, "Bq": 1e-6, "GBq": 1000.0, "mCi": 37.0, "uCi": 0.037, "Ci": 37000.0},
    "msv": {"mSv": 1.0, "Sv": 1000.0, "uSv": 1e-3},
    "ratio": {"{ratio}": 1.0, "1": 1.0, "ratio": 1.0, "": 1.0},
    "per_s": {"{pulse}/s": 1.0, "/s": 1.0, "Hz": 1.0, "{pulses}/s": 1.0, "1/s": 1.0},
    "count": {"1": 1.0, "{pulses}": 1.0, "{pulse}": 1.0, "{events}": 1.0, "{frames}": 1.0, "": 1.0,
              "{events}/{report}": 1.0},
}

_ANNOTATION = re.compile(r"^(1|\{[^{}]*\})?(/\{[^{}]*\})?$")
_STRIP = str.maketrans("", "", ".*^· \t")


def normalise_unit(unit: str | None) -> str:
    """``"Gy.m2"`` -> ``"Gym2"``; ``None`` -> ``""``."""
    return (unit or "").translate(_STRIP).replace("μ", "u").replace("µ", "u")


def convert(value: float, unit: str | None, target: str) -> float | None:
    """Convert ``value`` given in ``unit`` to ``target`` (a key such as ``"mgy"``).

    Returns ``None`` when the unit is not one known for that target.  Counts and
    ratios accept any dimensionless UCUM unit (``1``, ``{events}``).
    """
    factors = _FACTORS[target]
    factor = factors.get(normalise_unit(unit))
    if factor is None and target in ("count", "ratio") and _ANNOTATION.match((unit or "").strip()):
        factor = 1.0  # a UCUM annotation such as {X-Ray sources} is dimensionless
    if factor is None:
        return None
    result = value * factor
    # Remove binary noise from the scaling (1e-5 * 3 = 3.0000000000000004e-05).
    return float(f"{result:.12g}") if factor != 1.0 else result
