"""Clean Pixel Data (PS3.15 E.3.1, DCM 113101): rule-masked, OCR-verified pixel de-identification.

Public API
----------
- :class:`PixelSettings` (``from_profile``) and :data:`PIXEL_KEYS`: the profile keys
  (light: no heavy import until a :class:`PixelCleaner` is built).
- :class:`PixelCleaner`: ``clean(dataset) -> PixelReport | None`` (raises
  :class:`~copydicom.errors.PixelRiskError` to quarantine).
- :func:`builtin_rules`, :func:`table_info`: CTP's DicomPixelAnonymizer rules (via ``deid`` 0.4.13).

Needs the ``pixels`` extra (pylibjpeg and its plugins, Pillow, tesserocr) and the Debian
packages ``tesseract-ocr-eng`` (model) and ``fonts-dejavu-core`` (tests only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from copydicom.stages.pixels._settings import PIXEL_KEYS, Condition, PixelSettings, Rule, rule_from_config

if TYPE_CHECKING:
    from copydicom.stages.pixels._clean import PixelCleaner, PixelReport

#: The option name in a profile's ``options`` and its CID 7050 code.
OPTION = "clean_pixel_data"
CODE = ("113101", "Clean Pixel Data Option")


def cleaner_for(options: Iterable[str], settings: PixelSettings) -> PixelCleaner | None:
    """A :class:`PixelCleaner` if ``options`` hold :data:`OPTION`, else ``None`` (the caller keeps its
    pixel-risk gate).  Raises ConfigError if OCR cannot start (tesserocr or the language model missing)."""
    if OPTION not in options:
        return None
    from copydicom.stages.pixels._clean import PixelCleaner

    return PixelCleaner(settings)


def __getattr__(name: str) -> Any:
    # numpy, pydicom's pixel handlers and tesserocr load only when cleaning is configured.
    if name in ("PixelCleaner", "PixelReport"):
        from copydicom.stages.pixels import _clean

        return getattr(_clean, name)
    if name in ("builtin_rules", "table_info", "matching"):
        from copydicom.stages.pixels import _rules

        return getattr(_rules, name)
    raise AttributeError(name)


__all__ = ["CODE", "OPTION", "cleaner_for", "PIXEL_KEYS", "Condition", "PixelCleaner", "PixelReport", "PixelSettings", "Rule",
           "rule_from_config"]
