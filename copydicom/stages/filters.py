"""Routing filters: which instances a route sends, decided on metadata (pure, no I/O).

A filter is written in the configuration as ``filter:`` (YAML) or on the
command line as ``--filter 'Key=v1,v2'`` / ``--filter 'Key!=pattern'``::

    filter: {all: [{Modality: [CT, SR]}, {not: {SeriesDescription: "*scout*"}}]}

Grammar (a mapping with several entries is the ``all`` of them)::

    filter    := {all: [filter, ...]} | {any: [filter, ...]} | {not: filter} | {Key: match, ...}
    Key       := a DICOM keyword (Modality), a tag ("(0008,0060)", "0008,0060", "00080060"),
                 or the pseudo-attribute CallingAETitle (where the source knows it)
    match     := value | [value, ...]             (a list means any of)

Semantics (the routing-filter issue):

- string values are case-insensitive globs (``*``, ``?``, ``[...]``, :mod:`fnmatch`);
- a multi-valued attribute (ImageType) matches when any of its values does;
- a condition on a missing (or empty) attribute is false, so its ``not`` is true;
- attributes of VR DA, DT and TM take DICOM range matching (PS3.4 C.2.2.2.5):
  ``"20240101-20241231"``, ``"20240101-"``, ``"-20241231"``; ``YYYY-MM-DD`` is
  accepted for a single date;
- SOP Class UID (and any UI attribute) values may be given by UID, by name
  (``"CT Image Storage"``) or by keyword (``CTImageStorage``).

Evaluation is three-valued so that it can run on the cheapest metadata first:
:meth:`Filter.evaluate` with ``complete=False`` returns ``None`` when the
attributes it was given do not include one the decision needs (a series
listing has no ImageType); the pipeline then decides on the parsed dataset
(``complete=True``, where an absent attribute is missing).  Invalid filters
raise :class:`~copydicom.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Union

from copydicom.errors import ConfigError
from copydicom.model import InstanceRef

if TYPE_CHECKING:
    from pydicom import Dataset

#: Pseudo-attribute: the AE title that sent the instance to the source (Orthanc's RemoteAET).
CALLING_AE = "CallingAETitle"

_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_RANGE_VRS = ("DA", "DT", "TM")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class DescribedRef(InstanceRef):
    """An :class:`~copydicom.model.InstanceRef` carrying the metadata its source listed for free.

    ``attributes`` maps keywords (or 8-hex-digit tags) to values, as a listing
    returned them (QIDO-RS attributes, Orthanc main tags); filters are
    evaluated on them before any download.  They are not compared or hashed.
    """

    attributes: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)


# -- attribute names ------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _keyword(key: str) -> str | None:
    """The canonical name of an attribute key: its keyword, else ``GGGGEEEE``; ``None`` if unknown."""
    from pydicom import datadict

    key = key.strip()
    if key == CALLING_AE:
        return key
    match = _TAG.match(key)
    if match:
        tag = int(match.group(1) + match.group(2), 16)
        return datadict.keyword_for_tag(tag) or f"{tag:08X}"
    if datadict.tag_for_keyword(key) is not None:
        return key
    return None


def _vr(keyword: str) -> str:
    from pydicom import datadict

    if keyword == CALLING_AE:
        return "AE"
    try:
        tag = datadict.tag_for_keyword(keyword)
        return str(datadict.dictionary_VR(tag if tag is not None else int(keyword, 16)))
    except (KeyError, ValueError):
        return "UN"


@lru_cache(maxsize=1)
def _uid_names() -> dict[str, str]:
    """Lower-cased UID names and keywords -> UID (pydicom's copy of PS3.6 Table A-1)."""
    from pydicom._uid_dict import UID_dictionary

    out: dict[str, str] = {}
    for uid, entry in UID_dictionary.items():
        out[entry[0].lower()] = uid
        if entry[4]:
            out[entry[4].lower()] = uid
    return out


# -- values -------------------------------------------------------------------------------


def _values(raw: Any) -> list[str]:
    """An attribute value as a list of strings (``[]`` when missing or empty).

    Accepts plain strings (Orthanc main tags, where ``\\`` separates values),
    lists, numbers, and DICOM JSON elements (``{"vr": .., "Value": [..]}``,
    PS3.18 F.2, person names as ``{"Alphabetic": ..}``).
    """
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        if "Value" in raw or "vr" in raw:
            return _values(raw.get("Value"))
        if "Alphabetic" in raw:
            return _values(raw.get("Alphabetic"))
        return []
    if isinstance(raw, (list, tuple)):
        out: list[str] = []
        for item in raw:
            out.extend(_values(item))
        return out
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    text = str(raw)
    return [part.strip() for part in text.split("\\") if part.strip()]


def _date_text(value: Any, where: str) -> str:
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return text.replace("-", "")
    return text


def _pad(text: str, vr: str) -> str:
    """A DA/TM/DT value normalised so that string order is time order."""
    text = text.replace(":", "").strip()
    if vr == "TM":
        head, _, frac = text.partition(".")
        return head.ljust(6, "0") + ("." + frac if frac else "")
    return text


# -- conditions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    """One wanted value: a glob, an exact value, or a range."""

    text: str
    glob: bool = False
    low: str | None = None
    high: str | None = None
    is_range: bool = False

    def matches(self, value: str, vr: str) -> bool:
        if self.is_range:
            v = _pad(value, vr)
            # a value more precise than the bound (a DT against a date) compares on the bound's precision
            return (self.low is None or v >= self.low) and (self.high is None or v[: len(self.high)] <= self.high)
        if self.glob:
            return fnmatch.fnmatchcase(value.lower(), self.text)
        if self.text == value.lower():
            return True
        try:  # numbers written in YAML (SeriesNumber: 3) against "3" or "3.0"
            return float(self.text) == float(value)
        except ValueError:
            return False


#: Value representations whose values are numbers: a non-numeric wanted value could never match.
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "IS", "DS", "FL", "FD"})


def _check_calendar(text: str, keyword: str, where: str) -> None:
    """Refuse an 8-digit date that is not on the calendar (``20241345`` could never match)."""
    if re.fullmatch(r"\d{8}", text):
        try:
            _dt.datetime.strptime(text, "%Y%m%d")
        except ValueError:
            raise ConfigError(f"{where}: {keyword}: {text!r} is not a calendar date") from None


def _pattern(keyword: str, vr: str, value: Any, where: str) -> _Pattern:
    if isinstance(value, bool) or value is None or isinstance(value, (Mapping, list, tuple)):
        raise ConfigError(f"{where}: {keyword} takes a string, a number, or a list of them")
    text = str(value).strip()
    if vr in _RANGE_VRS:
        text = _date_text(value, where) if vr in ("DA", "DT") else text
        if text.count("-") == 1 and not re.fullmatch(r"\d{4}-\d{2}", text):
            low, _, high = text.partition("-")
            if not low and not high:
                raise ConfigError(f"{where}: {keyword}: empty range {text!r}")
            if not re.fullmatch(r"[\d.]*", low + high):
                raise ConfigError(f"{where}: {keyword}: {text!r} is not a DICOM {vr} range (e.g. 20240101-20241231)")
            if vr == "DA":
                for bound in (low, high):
                    _check_calendar(bound, keyword, where)
            return _Pattern(text, low=_pad(low, vr) or None, high=_pad(high, vr) or None, is_range=True)
        if vr == "DA" and not (re.fullmatch(r"\d{8}", text) or _GLOB.search(text)):
            raise ConfigError(f"{where}: {keyword}: {text!r} is not a date (YYYYMMDD, YYYY-MM-DD or a range)")
        if vr == "DA" and not _GLOB.search(text):
            _check_calendar(text, keyword, where)
    if vr in _NUMERIC_VRS and not _GLOB.search(text):
        try:
            float(text)
        except ValueError:
            raise ConfigError(f"{where}: {keyword}: {text!r} is not a number ({keyword} is {vr})") from None
    if vr == "UI" and not re.fullmatch(r"[\d.]+", text) and not _GLOB.search(text):
        uid = _uid_names().get(text.lower())
        if uid is None:
            raise ConfigError(f"{where}: {keyword}: {text!r} is neither a UID nor a known UID name or keyword")
        text = uid
    if _GLOB.search(text):
        return _Pattern(text.lower(), glob=True)
    return _Pattern(text.lower())


Tri = Union[bool, None]


class Filter:
    """A compiled filter; :meth:`evaluate` decides on a plain dict of attributes."""

    #: Canonical keywords the filter reads.
    keywords: frozenset[str] = frozenset()

    def evaluate(self, attributes: Mapping[str, Any], *, complete: bool = True) -> Tri:
        """True (send), False (filter out) or None (not decidable from these attributes).

        Parameters
        ----------
        attributes
            Keywords or 8-hex-digit tags -> values (strings, lists, DICOM JSON elements).
        complete
            The attributes are all the instance has (a parsed dataset): an absent
            attribute is missing.  With ``False`` an absent attribute is unknown.
        """
        return self._eval(_Normalised.of(attributes), complete)

    def _eval(self, attrs: _Normalised, complete: bool) -> Tri:  # pragma: no cover - abstract
        raise NotImplementedError

    def matches_dataset(self, ds: Dataset, extra: Mapping[str, Any] | None = None) -> bool:
        """Decide on a parsed dataset (plus what the source knew, e.g. CallingAETitle)."""
        attrs = dataset_attributes(ds, self.keywords)
        if extra:
            for key, value in _Normalised.of(extra).values.items():
                attrs.setdefault(key, value)
        return bool(self.evaluate(attrs, complete=True))


@dataclass
class _Normalised:
    values: dict[str, list[str]]

    @classmethod
    def of(cls, attributes: Mapping[str, Any]) -> _Normalised:
        if isinstance(attributes, _Normalised):
            return attributes
        out: dict[str, list[str]] = {}
        for key, raw in attributes.items():
            keyword = _keyword(str(key))
            if keyword is not None:
                out[keyword] = _values(raw)
        return cls(out)


@dataclass
class _Condition(Filter):
    keyword: str
    vr: str
    patterns: tuple[_Pattern, ...]

    def __post_init__(self) -> None:
        self.keywords = frozenset({self.keyword})

    def _eval(self, attrs: _Normalised, complete: bool) -> Tri:
        if self.keyword not in attrs.values:
            return False if complete else None
        values = attrs.values[self.keyword]
        if not values:
            return False
        return any(p.matches(v, self.vr) for v in values for p in self.patterns)


@dataclass
class _Join(Filter):
    """Three-valued AND (``decides=False``: any False decides) or OR (``decides=True``: any True
    decides); otherwise unknown if any part is unknown, else ``not decides``."""

    parts: tuple[Filter, ...]
    decides: bool = False

    def __post_init__(self) -> None:
        self.keywords = frozenset().union(*(p.keywords for p in self.parts))

    def _eval(self, attrs: _Normalised, complete: bool) -> Tri:
        unknown = False
        for part in self.parts:
            result = part._eval(attrs, complete)
            if result is self.decides:
                return self.decides
            unknown = unknown or result is None
        return None if unknown else not self.decides


@dataclass
class _Not(Filter):
    part: Filter

    def __post_init__(self) -> None:
        self.keywords = self.part.keywords

    def _eval(self, attrs: _Normalised, complete: bool) -> Tri:
        result = self.part._eval(attrs, complete)
        return None if result is None else not result


def _condition(key: Any, value: Any, where: str) -> Filter:
    keyword = _keyword(str(key))
    if keyword is None:
        raise ConfigError(f"{where}.{key}: not a DICOM keyword or tag (e.g. Modality or \"(0008,0060)\")")
    vr = _vr(keyword)
    here = f"{where}.{key}"
    wanted = list(value) if isinstance(value, (list, tuple)) else [value]
    if not wanted:
        raise ConfigError(f"{here}: an empty list matches nothing")
    return _Condition(keyword, vr, tuple(_pattern(keyword, vr, v, here) for v in wanted))


def parse_filter(data: Any, *, where: str = "filter") -> Filter:
    """Compile the ``filter:`` value of a route (see the module docstring); ConfigError names the key."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{where}: must be a non-empty mapping ({{all: [...]}}, {{any: [...]}}, {{not: ...}} or {{Keyword: value}})")
    parts: list[Filter] = []
    for key, value in data.items():
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{where}.{key}: must be a non-empty list of filters")
            inner = tuple(parse_filter(v, where=f"{where}.{key}[{i}]") for i, v in enumerate(value))
            parts.append(_Join(inner, decides=key == "any"))
        elif key == "not":
            parts.append(_Not(parse_filter(value, where=f"{where}.not")))
        else:
            parts.append(_condition(key, value, where))
    return parts[0] if len(parts) == 1 else _Join(tuple(parts))


_CLI = re.compile(r"^\s*([^=!]+?)\s*(!=|=)(.*)$", re.S)


def _split_values(text: str) -> list[str]:
    """``a,b\\,c`` -> ``["a", "b,c"]``: a comma separates values, ``\\,`` is a literal comma."""
    values: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            current.append(",")
            i += 2
            continue
        if ch == ",":
            values.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    values.append("".join(current).strip())
    return values


def parse_cli_filters(expressions: Sequence[str], *, where: str = "--filter") -> Filter | None:
    """Compile repeated ``--filter 'Key=v1,v2'`` / ``'Key!=v'`` options (all must hold)."""
    parts: list[Filter] = []
    for expression in expressions:
        match = _CLI.match(expression)
        if not match:
            raise ConfigError(f"{where} {expression!r}: expected Keyword=value[,value...] or Keyword!=value")
        key, op, rest = match.group(1), match.group(2), match.group(3)
        values = [v for v in _split_values(rest) if v]
        if not values:
            raise ConfigError(f"{where} {key}{op}: give at least one value")
        condition = _condition(key, values, where)
        parts.append(_Not(condition) if op == "!=" else condition)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else _Join(tuple(parts))


# -- attributes from a parsed dataset ------------------------------------------------------


def dataset_attributes(ds: Dataset, keywords: Iterable[str]) -> dict[str, Any]:
    """The filter's attributes read from a parsed dataset (absent ones left out)."""
    out: dict[str, Any] = {}
    for keyword in keywords:
        if keyword == CALLING_AE:
            continue
        tag = int(keyword, 16) if re.fullmatch(r"[0-9A-F]{8}", keyword) else keyword
        element = ds.get(tag) if isinstance(tag, int) else ds.data_element(tag)
        if element is None or element.value is None or element.value == "":
            continue
        value = element.value
        if element.VR == "SQ":
            continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            out[keyword] = [str(v) for v in value]
        else:
            out[keyword] = str(value)
    return out
