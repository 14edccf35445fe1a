"""The de-identification stage: PS3.15 Basic Profile and options, in flight.

Per instance (PS3.15 E.1.1, Table E.1-1):

1. Parse the Part 10 bytes (lazily: pixel data is never decoded or copied).
2. Pixel risk gate: Burned In Annotation = YES, or pixel data in a risky
   modality / SOP class (US, secondary capture...) -> :class:`PixelRiskError`
   unless the profile accepts the risk.
3. Walk every element at every depth with a tag -> action table precomputed
   from the profile: D dummy, Z empty, X remove, K keep, C clean, U keyed UID.
   Private attributes are removed (Retain Safe Private keeps Table E.3.10-1
   entries by private creator); repeating groups 50xx and 60xx (3000, 4000)
   follow their rows.  PatientID / PatientName (Z in the table, which allows
   a dummy) get the keyed pseudonym or the research ID of the patient map.
4. Add Patient Identity Removed, De-identification Method (Code Sequence,
   CID 7050) and Longitudinal Temporal Information Modified.
5. Write Part 10 with a new file meta information, re-parse and validate.

Action C by VR: DA/DT shifted by the per-patient offset (Modified Dates);
TM kept; text replaced by a marker (``free_text: replace``) or scrubbed of
the instance's identifiers (``scrub``); PN -> ``ANONYMOUS``; SQ walked with
the same rules (Content Sequence: SR TEXT values cleaned, PNAME/DATE/
DATETIME/UIDREF items follow their rows); anything else removed.
An action on a sequence applies to its subtree: X removes it, Z/D empty it;
K, C and U keep it and walk its items so UIDs inside stay consistent.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import re
import struct
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from copydicom.errors import DeidentificationError, InvalidInstance, PixelRiskError
from copydicom.logsetup import quiet_pydicom_values
from copydicom.model import Identity, Instance
from copydicom.stages.deid._keyed import (
    date_offset_days,
    is_valid_uid,
    keyed_pseudonym,
    keyed_uid,
)
from copydicom.stages.deid._mapping import MappingStore
from copydicom.stages.deid._profile import DeidProfile
from copydicom.stages.deid._tables import CID_7050, edition, resolve_compound, row_action, rows, safe_private
from copydicom.stages.pixels import cleaner_for
from copydicom.stages.deid._writer import file_meta, write_part10
from copydicom.stages.structure import (
    MAX_DEPTH,
    check_pixel_length,
    check_structure,
    read_fast,
    top_level_values,
)

log = logging.getLogger(__name__)

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
CONTENT_SEQUENCE = 0x0040A730
TEXT_VALUE = 0x0040A160
METHOD_CODES = 0x00120064
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
FREE_TEXT_MARKER = "CLEANED"
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "CS", "AE", "UR"})
_NUM_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_BIN_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_DIGITS = re.compile(r"\d{4,}")
#: Identifiers whose values are looked for in other text at any depth (issue: an accession
#: number copied into a Specimen Preparation step's TextValue survived Clean Structured Content).
ID_TAGS: frozenset[int] = frozenset({
    0x00100020, 0x00101000, 0x00080050, 0x00200010, 0x00400551, 0x00400512, 0x00101090, 0x00401001,
    0x00400009, 0x00400253, 0x00402016, 0x00402017, 0x00380010, 0x00380060, 0x00100021,
})
#: VRs of text in which a copied identifier is looked for (CS, UI, AE, UR cannot hold free text).
_ID_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
#: Three-digit ZIP areas of 20,000 people or fewer (HHS de-identification guidance, 2000 census).
RESTRICTED_ZIP3 = frozenset({"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831",
                             "878", "879", "884", "890", "893"})
_ZIP = re.compile(r"(?<!\d)(\d{5})(?:-\d{4})?(?!\d)")
_DATE_REFS = (0x00080020, 0x00080021, 0x00080022, 0x00080023)
_VR_CACHE: dict[int, str] = {}


def _vr_of(tag: int, elem: Any) -> str:
    vr = elem.VR
    if vr:
        return str(vr)
    if tag not in _VR_CACHE:
        try:
            _VR_CACHE[tag] = str(dictionary_VR(tag)).split(" or ")[0]
        except KeyError:
            _VR_CACHE[tag] = "UN"
    return _VR_CACHE[tag]


def _tick(clock: dict[str, float], phase: str, since: float) -> float:
    now = time.thread_time()
    clock[phase] = clock.get(phase, 0.0) + now - since
    return now


_FMT: dict[int, str] = {}


def _fmt(tag: int) -> str:
    text = _FMT.get(tag)
    if text is None:
        text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if len(_FMT) < 65536:  # bounded: private and repeating groups vary
            _FMT[tag] = text
    return text


def build_actions(profile: DeidProfile) -> tuple[dict[int, str], str, str, str, str]:
    """Precompute ``{tag: action}`` and the actions for curves, overlay data,
    overlay comments and private attributes under ``profile``.

    The ``private_only`` preset keeps every public attribute (an empty table) and
    applies only the private row."""
    actions: dict[int, str] = {}
    curve = overlay_data = overlay_comments = private = "X"
    keep_public = profile.preset == "private_only"
    for row in rows():
        code = row_action(row, profile.options)
        if row.tag == "private":
            private = code
        elif keep_public:
            continue
        elif row.tag.upper().startswith("50XX"):
            curve = code
        elif row.tag.upper() == "60XX3000":
            overlay_data = code
        elif row.tag.upper() == "60XX4000":
            overlay_comments = code
        else:
            tag = int(row.tag, 16)
            vr = dictionary_VR(tag) if _known(tag) else ""
            actions[tag] = resolve_compound(code, tag, vr == "SQ")
    if keep_public:
        curve = overlay_data = overlay_comments = "K"
    # Z allows a dummy: PatientID/Name carry the pseudonym (PS3.15 E.1.1).
    return actions, curve, overlay_data, overlay_comments, private


def _known(tag: int) -> bool:
    try:
        dictionary_VR(tag)
        return True
    except KeyError:
        return False


class _Ctx:
    """Per-instance state: date offset, identifiers to scrub, audit, UID pairs."""

    __slots__ = ("audit", "ids_equal", "ids_re", "idents", "invalid_dates", "offset", "seen", "uids")

    def __init__(self, offset: int, idents: list[str], ids_equal: frozenset[str] = frozenset(),
                 ids_re: re.Pattern[str] | None = None) -> None:
        self.offset = offset
        self.idents = idents
        self.ids_equal = ids_equal
        self.ids_re = ids_re
        self.audit: list[list[str]] = []
        self.seen: set[tuple[str, str]] = set()
        self.uids: dict[str, str] = {}
        self.invalid_dates = 0

    def note(self, path: str, action: str) -> None:
        key = (path, action)
        if key not in self.seen:
            self.seen.add(key)
            self.audit.append([path, action])


class DeidStage:
    """De-identify instances in flight under a :class:`DeidProfile`.

    Parameters
    ----------
    profile
        The profile (options and settings).
    key
        The secret project key (:func:`load_key`); all pseudonyms derive from it.
    mapping_store
        Where to record old -> new UIDs and PatientIDs for export, or ``None``.
    """

    name = "deid"
    #: ``process`` and ``transform_identity`` keep no per-instance state on the
    #: object: one stage may serve several worker threads.

    #: Set to ``{}`` to accumulate the CPU seconds (this thread's) of each phase of
    #: :meth:`process`: parse, deidentify, write, validate (benchmarks; one thread).
    cpu_seconds: dict[str, float] | None = None

    def __init__(self, profile: DeidProfile, key: bytes, mapping_store: MappingStore | None = None) -> None:
        if len(key) < 16:
            raise ValueError("de-identification key must have at least 16 bytes")
        quiet_pydicom_values()
        self.profile = profile
        self._key = key
        self._store = mapping_store
        (self._actions, self._curve, self._overlay_data, self._overlay_comments,
         self._private) = build_actions(profile)
        self._private_only = profile.preset == "private_only"
        self._hipaa = profile.preset == "hipaa_safe_harbor"
        self._retain_uids = "retain_uids" in profile.options or self._private_only
        self._modified_dates = "retain_long_modified_dates" in profile.options and not self._hipaa
        self._full_dates = "retain_long_full_dates" in profile.options and not self._hipaa
        self._overlay_gone = self._overlay_data in ("X", "C")
        self._id_tags = frozenset(t for t in ID_TAGS if self._actions.get(t, "K") != "K")
        self._safe = safe_private() if self._private == "C" else frozenset()
        self._method = self._method_items()
        self._codes = {imp: self._encoded_codes(imp) for imp in (False, True)}
        temporal = ("UNMODIFIED" if self._full_dates else "MODIFIED" if self._modified_dates or self._hipaa
                    else "REMOVED")
        self._marks: dict[int, tuple[str, str]] = {
            0x00120062: ("CS", "YES"),
            0x00120063: ("LO", f"copydicom {profile.name}; {edition()} E.1-1"[:64]),
            METHOD_CODES: ("SQ", ""),
            0x00280303: ("CS", temporal),
        }
        # Clean Pixel Data option (copydicom.stages.pixels); without it, the pixel-risk gate.
        self._pixels = cleaner_for(profile.options, profile.pixels)

    # -- identity -----------------------------------------------------------------

    @staticmethod
    def subject(patient_id: str, study_uid: str) -> str:
        """What pseudonym and date offset derive from: the PatientID, or for an empty one
        the study (an empty PatientID never maps to a pseudonym shared by other patients).

        Raises InvalidInstance when both are empty."""
        patient_id = patient_id.strip("\x00 ")
        if patient_id:
            return patient_id
        study_uid = study_uid.strip("\x00 ")
        if not study_uid:
            raise InvalidInstance("PatientID and StudyInstanceUID both empty: no subject to pseudonymise")
        return "\x00empty-patient-id\x00" + study_uid

    def pseudonym(self, patient_id: str, study_uid: str = "") -> tuple[str, str]:
        """``(new PatientID, new PatientName)`` for an original PatientID.

        An empty PatientID gets a pseudonym derived from the study (:meth:`subject`),
        one per study: two patients without an ID are never merged.

        Raises DeidentificationError if the patient map has no entry and its
        policy is ``quarantine`` (an empty PatientID included).
        """
        if self._private_only:
            return patient_id, ""
        subject = self.subject(patient_id, study_uid)
        pmap = self.profile.patient_map
        if pmap is not None:
            if patient_id and patient_id in pmap.ids:
                new = pmap.ids[patient_id]
                return new, pmap.names.get(patient_id, new)
            if pmap.missing == "quarantine":
                what = "PatientID empty" if subject != patient_id else "PatientID not in the patient map"
                raise DeidentificationError(f"{what} (policy: quarantine)")
        new = keyed_pseudonym(self._key, subject, self.profile.pseudonym_prefix)
        return new, new

    def uid(self, uid: str) -> str:
        """The replacement of one UID under this profile (action U)."""
        uid = uid.strip("\x00 ")
        if not uid or self._retain_uids:
            return uid
        return keyed_uid(self._key, uid)

    def transform_identity(self, identity: Identity) -> Identity:
        """Predict the output identity without the bytes (agrees with :meth:`process`)."""
        return Identity(
            self.pseudonym(identity.patient_id, identity.study_uid)[0],
            self.uid(identity.study_uid),
            self.uid(identity.series_uid),
            self.uid(identity.sop_uid),
        )

    def close(self) -> None:
        """Write the mapping store's pending pairs (called when the route stops)."""
        if self._store is not None:
            self._store.close()

    # -- processing ---------------------------------------------------------------

    def process(self, instance: Instance) -> Instance:
        """De-identify one instance; raise a SkippableError to quarantine it.

        Uses ``instance.dataset`` if set (and modifies it in place: the
        returned instance carries it), else parses ``instance.data``.

        Raises
        ------
        InvalidInstance
            Unreadable input, or the output failed the validation gate.
        PixelRiskError
            Pixels may show identity and the profile does not accept the risk.
        DeidentificationError
            PatientID missing from the patient map (policy quarantine), or an
            element could not be processed.
        """
        clock = self.cpu_seconds
        t0 = time.thread_time() if clock is not None else 0.0
        ds = instance.dataset
        if ds is None:
            # Structure first (depth bound, truncation, not DICOM), in the same walk that builds the
            # dataset; no Part 10 header: a bare dataset as in a C-STORE, written out as Part 10.
            ds = read_fast(instance.data)
            if ds is None:
                part10 = check_structure(instance.data)
                try:
                    ds = dcmread(io.BytesIO(instance.data), force=not part10)
                except (InvalidDicomError, EOFError, ValueError, TypeError, struct.error) as exc:
                    raise InvalidInstance(f"not readable as DICOM: {type(exc).__name__}") from None
            check_pixel_length(ds)
        if clock is not None:
            t0 = _tick(clock, "parse", t0)
        try:
            sop_class = _peek(ds, 0x00080016)
            out_ds, audit, uids, pid_pair = self._deidentify(ds)
            if clock is not None:
                t0 = _tick(clock, "deidentify", t0)
            data = self._write(out_ds)
            if clock is not None:
                t0 = _tick(clock, "write", t0)
        except (DeidentificationError, PixelRiskError, InvalidInstance):
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed element must quarantine, not crash the pipeline
            raise DeidentificationError(f"de-identification failed: {type(exc).__name__}") from None
        if not self._private_only:
            self._validate(data, out_ds, sop_class)
        if clock is not None:
            _tick(clock, "validate", t0)
        if self._store is not None and not self._private_only:
            self._store.record_many("uid", uids.items())
            self._store.record_many("patient_id", [pid_pair])
        identity = Identity(pid_pair[1], _peek(out_ds, 0x0020000D), _peek(out_ds, 0x0020000E),
                            _peek(out_ds, 0x00080018))
        return Instance(
            ref=instance.ref,
            data=data,
            dataset=out_ds,
            identity=identity,
            audit={**instance.audit, "deid": audit},
            documents=list(instance.documents),
        )

    def deidentify_dataset(self, ds: Dataset) -> tuple[Dataset, list[list[str]]]:
        """De-identify a dataset in place without writing or validating it (the pixel gate
        still applies); returns the dataset and the audit."""
        out, audit, _, _ = self._deidentify(ds)
        return out, audit

    def _deidentify(self, ds: Dataset) -> tuple[Dataset, list[list[str]], dict[str, str], tuple[str, str]]:
        sop_class = _peek(ds, 0x00080016)
        if not sop_class:
            raise InvalidInstance("SOP Class UID (0008,0016) missing or empty")
        if not _peek(ds, 0x00080018):
            raise InvalidInstance("SOP Instance UID (0008,0018) missing or empty: the instance has no identity")
        if self._private_only:  # private attributes go, everything else stays (no pixel gate: pixels kept as is)
            ctx = _Ctx(0, [])
            self._walk(ds, ctx, "")
            _set_text(ds, 0x00120063, "LO", self._marks[0x00120063][1])
            pid = _peek(ds, PATIENT_ID)
            return ds, ctx.audit, {}, (pid, pid)
        pixels = self._pixels.clean(ds) if self._pixels is not None else None  # None: no pixel data
        if pixels is None:
            self._pixel_gate(ds, sop_class)
        old_pid = _peek(ds, PATIENT_ID)
        study_uid = _peek(ds, 0x0020000D)
        subject = self.subject(old_pid, study_uid)
        new_pid, new_name = self.pseudonym(old_pid, study_uid)
        lo, hi = self.profile.date_shift_days
        equal, words = self._collect_ids(ds)
        ctx = _Ctx(date_offset_days(self._key, subject, lo, hi), self._identifiers(ds), equal, _ids_regex(words))
        if pixels is not None:
            ctx.note("(7FE0,0010)", f"C(clean_pixel_data {pixels.summary()})")
        self._walk(ds, ctx, "")
        if self._hipaa:
            self._hipaa_ages(ds, ctx)
        _set_text(ds, PATIENT_ID, "LO", new_pid)
        _set_text(ds, PATIENT_NAME, "PN", new_name)
        ctx.note(_fmt(PATIENT_ID), "Z")
        ctx.note(_fmt(PATIENT_NAME), "Z")
        self._mark(ds)
        return ds, ctx.audit, ctx.uids, (old_pid if subject == old_pid else f"(empty) {study_uid}", new_pid)

    def _pixel_gate(self, ds: Dataset, sop_class: str) -> None:
        if self.profile.accept_pixel_risk:
            return
        burned = _peek(ds, 0x00280301).upper()
        if burned == "YES":
            raise PixelRiskError("Burned In Annotation is YES")
        has_pixels = any(t in ds for t in PIXEL_TAGS)
        modality = _peek(ds, 0x00080060).upper()
        if has_pixels and modality in self.profile.pixel_risk_modalities:
            raise PixelRiskError(f"modality {modality} often carries burned-in text")
        if has_pixels and "SCREEN SAVE" in _peek(ds, 0x00080008).upper():
            raise PixelRiskError("Image Type SCREEN SAVE (a screenshot, e.g. a dose page)")
        if sop_class in self.profile.pixel_risk_sop_classes:
            raise PixelRiskError(f"SOP class {sop_class} (secondary capture/document) may show identity")

    def _identifiers(self, ds: Dataset) -> list[str]:
        if self.profile.free_text != "scrub":
            return []
        found: set[str] = set()
        for kw in ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
                   "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "ReferringPhysicianName",
                   "InstitutionName", "StationName", "MedicalRecordLocator"):
            value = ds.get(kw)
            if value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                for part in re.split(r"[\^=,\s]+", str(v)):
                    if len(part) >= 2:
                        found.add(part)
        return sorted(found, key=len, reverse=True)

    def _collect_ids(self, ds: Dataset, depth: int = 0) -> tuple[frozenset[str], tuple[str, ...]]:
        """Identifier values the instance carries anywhere, among those the profile removes:
        ``(values case-folded for equality, words of >= 4 characters for whole-word search)``."""
        equal: set[str] = set()
        words: set[str] = set()
        if self._id_tags:
            self._collect_into(ds, equal, words, depth)
        return frozenset(equal), tuple(sorted(words, key=lambda w: (-len(w), w)))

    def _collect_into(self, ds: Dataset, equal: set[str], words: set[str], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidInstance(f"sequences nested deeper than {MAX_DEPTH} levels")
        id_tags, actions = self._id_tags, self._actions
        for tag, elem in list(ds._dict.items()):
            if tag >> 16 & 1:
                continue
            vr = _vr_of(tag, elem)
            if vr == "SQ":
                for item in ds[tag].value or ():
                    self._collect_into(item, equal, words, depth + 1)
                continue
            if tag not in id_tags and not (vr == "PN" and actions.get(tag, "K") != "K"):
                continue
            for v in _text_of(ds, tag, elem).split("\\"):
                v = v.strip("\x00 ")
                if not v:
                    continue
                equal.add(v.casefold())
                if vr == "PN":
                    words.update(p for p in re.split(r"[\^=,\s]+", v) if len(p) >= 4)
                elif len(v) >= 4:
                    words.add(v)

    def _match_ids(self, ds: Dataset, tag: int, elem: Any, vr: str, ctx: _Ctx) -> bool:
        """Replace a text value equal to an identifier, or holding one as a whole word."""
        text = _text_of(ds, tag, elem)
        if not text:
            return False
        parts = text.split("\\") if vr in ("SH", "LO", "UC") else [text]
        rx, equal = ctx.ids_re, ctx.ids_equal
        hits = [p.strip("\x00 ").casefold() in equal or (rx is not None and rx.search(p) is not None) for p in parts]
        if not any(hits):
            return False
        if self.profile.free_text == "scrub":
            new = [p if not hit else FREE_TEXT_MARKER if p.strip("\x00 ").casefold() in equal
                   else rx.sub("*", p) if rx is not None else FREE_TEXT_MARKER for p, hit in zip(parts, hits)]
            value = "\\".join(new)
        else:
            value = FREE_TEXT_MARKER
        _set_text(ds, tag, vr, value)
        return True

    def _walk(self, ds: Dataset, ctx: _Ctx, path: str, in_content: bool = False, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise InvalidInstance(f"sequences nested deeper than {MAX_DEPTH} levels")
        actions = self._actions
        match = ctx.ids_re is not None or bool(ctx.ids_equal)
        store = ds._dict
        for tag in list(store):
            group = tag >> 16
            elem = store.get(tag)  # raw as read, or converted: what get_item returns, without its overhead
            if elem is None:
                continue
            if group & 1:
                self._private_elem(ds, tag, ctx, path)
                continue
            if self._hipaa and self._hipaa_elem(ds, tag, elem, ctx, path):
                continue
            action = actions.get(tag)
            if action is None:
                if group & 0xFF00 == 0x5000:
                    action = self._curve
                elif group & 0xFF00 == 0x6000:
                    if self._overlay_gone:  # the whole overlay group: a partial module breaks readers
                        self._drop_overlay(ds, tag, ctx, path)
                        continue
                    low = tag & 0xFFFF
                    action = self._overlay_data if low == 0x3000 else self._overlay_comments if low == 0x4000 else None
                if action is None:
                    vr = _vr_of(tag, elem)
                    if in_content and tag == TEXT_VALUE and not self._private_only:
                        self._clean(ds, tag, "UT", ctx, path)
                        ctx.note(path + _fmt(tag), "C")
                    elif vr == "SQ":
                        self._walk_seq(ds, tag, ctx, path, in_content, depth)
                    elif match and vr in _ID_TEXT_VRS and self._match_ids(ds, tag, elem, vr, ctx):
                        ctx.note(path + _fmt(tag), "C(identifier)")
                    continue
            self._apply(ds, tag, elem, action, ctx, path, depth)

    def _drop_overlay(self, ds: Dataset, tag: int, ctx: _Ctx, path: str) -> None:
        del ds[tag]
        low = tag & 0xFFFF
        if low == 0x3000:
            ctx.note(path + _fmt(tag), self._overlay_data)
        elif low == 0x4000:
            ctx.note(path + _fmt(tag), self._overlay_comments)
        else:
            ctx.note(f"{path}({tag >> 16:04X},xxxx)", "X")

    def _hipaa_elem(self, ds: Dataset, tag: int, elem: Any, ctx: _Ctx, path: str) -> bool:
        """Safe Harbor: every date reduced to its year, the address to a three-digit ZIP."""
        if tag == 0x00101040:
            zips = _ZIP.findall(_text_of(ds, tag, elem))
            zip3 = zips[-1][:3] if zips else ""
            if zip3:
                _set_text(ds, tag, "LO", "000" if zip3 in RESTRICTED_ZIP3 else zip3)
            else:
                del ds[tag]
            ctx.note(path + _fmt(tag), "C(zip3)" if zip3 else "X")
            return True
        vr = _vr_of(tag, elem)
        if vr not in ("DA", "DT"):
            return False
        years = [v.strip("\x00 ")[:4] for v in _text_of(ds, tag, elem).split("\\")]
        years = [y for y in years if len(y) == 4 and y.isdigit()]
        _set_text(ds, tag, vr, "\\".join(y + "0101" if vr == "DA" else y for y in years))
        ctx.note(path + _fmt(tag), "C(year)")
        return True

    def _hipaa_ages(self, ds: Dataset, ctx: _Ctx) -> None:
        """Safe Harbor: ages over 89 become 090Y and the birth date ``<study year - 90>0101``;
        a birth date without an age or a reference date to judge it by is emptied."""
        age = _peek(ds, 0x00101010)
        years = int(age[:3]) if len(age) == 4 and age.endswith("Y") and age[:3].isdigit() else None
        ref = next((int(y) for y in (_peek(ds, t)[:4] for t in _DATE_REFS) if len(y) == 4 and y.isdigit()), None)
        birth = _peek(ds, 0x00100030)[:4]
        born = int(birth) if len(birth) == 4 and birth.isdigit() else None
        over = (years is not None and years > 89) or (born is not None and ref is not None and ref - born > 89)
        if over and age:
            _set_text(ds, 0x00101010, "AS", "090Y")
            ctx.note("(0010,1010)", "C(90 or older)")
        if born is not None and (over or ref is None):
            _set_text(ds, 0x00100030, "DA", f"{ref - 90:04d}0101" if ref is not None else "")
            ctx.note("(0010,0030)", "C(90 or older)" if over else "Z(no reference date)")

    def _walk_seq(self, ds: Dataset, tag: int, ctx: _Ctx, path: str, in_content: bool, depth: int) -> None:
        seq = ds[tag].value
        if not seq:
            return
        sub = f"{path}{_fmt(tag)}>"
        content = in_content or tag == CONTENT_SEQUENCE
        for item in seq:
            self._walk(item, ctx, sub, content, depth + 1)

    def _dummy_seq(self, seq: Sequence, ctx: _Ctx, depth: int) -> Sequence:
        """D on a sequence (PS3.15 E.1.1: a dummy value of the same VR): one item of dummies, so a
        Type 1 sequence (e.g. Verifying Observer Sequence) keeps its one required item."""
        if not seq:
            return Sequence([])
        if depth > MAX_DEPTH:
            raise InvalidInstance(f"sequences nested deeper than {MAX_DEPTH} levels")
        item = seq[0]
        for tag in list(item._dict):
            if tag >> 16 & 1:
                del item[tag]
                continue
            elem = item[tag]
            vr = str(elem.VR).split(" or ")[0]
            if vr == "SQ":
                elem.value = self._dummy_seq(elem.value, ctx, depth + 1)
            elif vr == "UI":
                self._replace_uids(elem, ctx)
            elif elem.value not in (None, "", b""):  # an empty (Type 2) value stays empty
                elem.value = _dummy(vr)
        return Sequence([item])

    def _apply(self, ds: Dataset, tag: int, raw: Any, action: str, ctx: _Ctx, path: str, depth: int) -> None:
        where = path + _fmt(tag)
        if action == "K":
            vr = _vr_of(tag, raw)
            if vr == "SQ":
                self._walk_seq(ds, tag, ctx, path, False, depth)
            elif vr in _ID_TEXT_VRS and (ctx.ids_equal or ctx.ids_re) and self._match_ids(ds, tag, raw, vr, ctx):
                ctx.note(where, "C(identifier)")
                return
            ctx.note(where, "K")
            return
        if action == "X":
            del ds[tag]
            ctx.note(where, "X")
            return
        if isinstance(raw, RawDataElement):
            done = self._apply_raw(ds, tag, raw, action, ctx)
            if done is not None:
                ctx.note(where, done)
                return
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            if action == "Z":
                elem.value = Sequence([])
            elif action == "D":
                elem.value = self._dummy_seq(elem.value, ctx, depth + 1)
            else:  # C / U: keep and walk the subtree; C cleans its TEXT items as structured content
                self._walk_seq(ds, tag, ctx, path, action == "C", depth)
            ctx.note(where, action)
            return
        if vr == "UN" and action in ("U", "C"):
            del ds[tag]  # unknown encoding: cannot be replaced consistently, so it goes
            action = "X"
        elif action == "U" or (action == "D" and vr == "UI"):
            self._replace_uids(elem, ctx)
        elif action == "Z":
            elem.value = b"" if vr in _BIN_VRS else None
        elif action == "D":
            elem.value = _dummy(vr)
        elif action == "C":
            action = self._clean(ds, tag, vr, ctx, path)
        ctx.note(where, action)

    def _apply_raw(self, ds: Dataset, tag: int, raw: RawDataElement, action: str, ctx: _Ctx) -> str | None:
        """Apply an action on undecoded bytes (ASCII-only VRs); ``None``: use the decoded path."""
        vr = _vr_of(tag, raw)
        if vr == "SQ" or raw.length == 0xFFFFFFFF or raw.is_buffered or not raw.is_little_endian:
            return None
        new: bytes
        if action == "Z":
            new = b""
        elif action == "U" or (action == "D" and vr == "UI") or (action == "C" and vr == "UI"):
            if vr != "UI":
                return None
            values = (raw.value or b"").decode("ascii", "replace").strip("\x00 ").split("\\")
            out = []
            for v in values:
                old = v.strip("\x00 ")
                n = keyed_uid(self._key, old) if old else old
                if n != old:
                    ctx.uids[old] = n
                out.append(n)
            new = _pad("\\".join(out).encode("ascii"), b"\x00")
        elif action == "D":
            dummy = _RAW_DUMMY.get(vr)
            if dummy is None:
                return None
            new = dummy
        elif action == "C" and vr in ("DA", "DT") and self._modified_dates:
            text = (raw.value or b"").decode("ascii", "replace").rstrip("\x00 ")
            ok, value = _shift(text.split("\\") if "\\" in text else text, vr, ctx.offset)
            if value is None:
                new = b""
            else:
                new = _pad(("\\".join(value) if isinstance(value, list) else value).encode("ascii"), b" ")
            ds._dict[BaseTag(tag)] = raw._replace(length=len(new), value=new)
            if not ok:
                ctx.invalid_dates += 1
                return "Z(invalid date)"
            return "C"
        elif action == "C" and vr == "TM":
            return "C"
        else:
            return None
        ds._dict[BaseTag(tag)] = raw._replace(length=len(new), value=new)
        return action

    def _replace_uids(self, elem: DataElement, ctx: _Ctx) -> None:
        value = elem.value
        if value is None or value == "":
            return
        values = list(value) if not isinstance(value, str) else [value]
        new = []
        for v in values:
            old = str(v).strip("\x00 ")
            n = keyed_uid(self._key, old) if old else old
            if n != old:
                ctx.uids[old] = n
            new.append(n)
        elem.value = new if len(new) > 1 else new[0]

    def _clean(self, ds: Dataset, tag: int, vr: str, ctx: _Ctx, path: str) -> str:
        elem = ds[tag]
        if vr in ("DA", "DT"):
            if self._full_dates:
                return "K"
            if not self._modified_dates:
                elem.value = _dummy(vr)
                return "D"
            ok, value = _shift(elem.value, vr, ctx.offset)
            elem.value = value
            if not ok:
                ctx.invalid_dates += 1
                return "Z(invalid date)"
            return "C"
        if vr == "TM":
            return "C"
        if vr == "UI":
            self._replace_uids(elem, ctx)
            return "C"
        if vr == "PN":
            elem.value = "ANONYMOUS"
            return "C"
        if vr in _TEXT_VRS:
            if elem.value in (None, ""):
                return "C"
            if self.profile.free_text == "scrub" and vr not in ("CS", "AE"):
                elem.value = self._scrub(elem.value, ctx)
            else:
                elem.value = FREE_TEXT_MARKER
            return "C"
        if vr in _NUM_VRS or vr in ("DS", "IS", "AS"):
            return "C"  # numeric characteristics carry no identifiers beyond their meaning
        del ds[tag]  # binary or other values that cannot be cleaned: removed
        return "C"

    def _scrub(self, value: Any, ctx: _Ctx) -> Any:
        if not isinstance(value, str):
            return [self._scrub(v, ctx) for v in value]
        if value.strip().casefold() in ctx.ids_equal:
            return FREE_TEXT_MARKER
        text = value
        for ident in ctx.idents:
            text = re.sub(re.escape(ident), "*", text, flags=re.IGNORECASE)
        if ctx.ids_re is not None:
            text = ctx.ids_re.sub("*", text)
        return _DIGITS.sub("*", text)

    def _private_elem(self, ds: Dataset, tag: int, ctx: _Ctx, path: str) -> None:
        group, low = tag >> 16, tag & 0xFFFF
        keep = False
        if self._safe and low >= 0x0010:
            if low <= 0x00FF:
                creator = str(ds[tag].value or "").strip().upper()
                keep = any(g == group and c == creator for g, c, _ in self._safe)
            elif low >= 0x1000:
                ctag = (group << 16) | (low >> 8)
                if ctag in ds:
                    creator = str(ds[ctag].value or "").strip().upper()
                    keep = (group, creator, low & 0xFF) in self._safe
        where = f"{path}({group:04X},xx{low & 0xFF:02X})" if low >= 0x1000 else path + _fmt(tag)
        if keep:
            ctx.note(where, "K")
            return
        del ds[tag]
        ctx.note(where, "X")

    def _method_items(self) -> Sequence:
        items = []
        for name in ("basic",) + tuple(o for o in self.profile.options if o in CID_7050):
            value, meaning = CID_7050[name]
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        return Sequence(items)

    def _mark(self, ds: Dataset) -> None:
        implicit = _is_implicit(ds)
        for tag, (vr, value) in self._marks.items():
            if tag == METHOD_CODES and not _is_little_endian(ds):
                # The pre-encoded items are little endian: let pydicom encode them for a big endian file.
                ds.DeidentificationMethodCodeSequence = self._method_items()
            elif tag == METHOD_CODES:
                ds._dict[BaseTag(tag)] = RawDataElement(
                    BaseTag(tag), None if implicit else "SQ", len(self._codes[implicit]), self._codes[implicit],
                    0, implicit, True, True, False)
            else:
                _set_text(ds, tag, vr, value)

    def _encoded_codes(self, implicit: bool) -> bytes:
        """The items of the De-identification Method Code Sequence, encoded once."""
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = implicit
        holder = Dataset()
        holder.DeidentificationMethodCodeSequence = self._method
        write_dataset(fp, holder)
        return fp.getvalue()[8 if implicit else 12:]

    def _write(self, ds: Dataset) -> bytes:
        meta = file_meta(_peek(ds, 0x00080016), _peek(ds, 0x00080018), _transfer_syntax(ds) or "1.2.840.10008.1.2.1",
                         PYDICOM_IMPLEMENTATION_UID, "COPYDICOM")
        return write_part10(ds, meta)

    def _validate(self, data: bytes, ds: Dataset, sop_class: str) -> None:
        """Validation gate, on the output bytes themselves: every element at every depth walks
        cleanly (:func:`top_level_values`, the structure check), and the Type 1 identity, the
        pixel module and Patient Identity Removed, re-read from those bytes, are intact.

        Why not ``dcmread``: it cost a third of the CPU of an instance; the byte walk checks
        the same structure, and the values checked are read from the bytes written.
        """
        try:
            ts, values = top_level_values(data, _VALIDATE_TAGS)
        except InvalidInstance as exc:
            raise InvalidInstance(f"de-identified output is not readable: {exc}") from None

        def text(tag: int) -> str:
            return bytes(values.get(tag, b"")).decode("ascii", "replace").strip("\x00 ")

        if not ts:
            raise InvalidInstance("de-identified output has no file meta information")
        if text(0x00080016) != sop_class:
            raise InvalidInstance("SOP Class UID changed or missing after de-identification")
        for tag, kw in ((0x00080018, "SOPInstanceUID"), (0x0020000D, "StudyInstanceUID"),
                        (0x0020000E, "SeriesInstanceUID")):
            if not is_valid_uid(text(tag)):
                raise InvalidInstance(f"{kw} missing or not a valid UID after de-identification")
        if text(0x00020003) != text(0x00080018):
            raise InvalidInstance("file meta SOP Instance UID differs from the dataset's")
        if any(t in values for t in PIXEL_TAGS):
            for tag, kw in ((0x00280010, "Rows"), (0x00280011, "Columns"), (0x00280100, "BitsAllocated"),
                            (0x00280002, "SamplesPerPixel")):  # US: binary, present when it has its 2 bytes
                if len(values.get(tag, b"")) < 2:
                    raise InvalidInstance(f"Type 1 attribute {kw} missing after de-identification")
            if not text(0x00280004):
                raise InvalidInstance("Type 1 attribute PhotometricInterpretation missing after de-identification")
        if text(0x00120062) != "YES":
            raise InvalidInstance("Patient Identity Removed is not YES")


_VALIDATE_TAGS = frozenset({0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00280010, 0x00280011, 0x00280100,
                            0x00280002, 0x00280004, 0x00120062, *PIXEL_TAGS})


def _dummy(vr: str) -> Any:
    if vr == "PN":
        return "ANONYMOUS"
    if vr == "DA":
        return "19000101"
    if vr == "DT":
        return "19000101000000"
    if vr == "TM":
        return "000000"
    if vr == "AS":
        return "000Y"
    if vr in ("DS", "IS"):
        return "0"
    if vr in _NUM_VRS:
        return 0
    if vr in _BIN_VRS:
        return b"\x00\x00"
    if vr == "AT":
        return 0
    return "ANONYMIZED"


@lru_cache(maxsize=512)
def _ids_regex(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """One case-insensitive whole-word pattern for identifier words (cached: a study repeats them)."""
    if not words:
        return None
    return re.compile(r"(?<![0-9A-Za-z])(?:" + "|".join(re.escape(w) for w in words) + r")(?![0-9A-Za-z])",
                      re.IGNORECASE)


def _text_of(ds: Dataset, tag: int, elem: Any) -> str:
    """The text of an element (multiple values joined by backslashes), raw ASCII without decoding."""
    if isinstance(elem, RawDataElement):
        data = elem.value or b""
        if data.isascii():
            return data.decode("ascii")
        elem = ds[tag]
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _peek(ds: Dataset, tag: int) -> str:
    """The string value of a top-level element without converting a raw ASCII element."""
    elem = ds._dict.get(BaseTag(tag))
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement) and elem.is_little_endian:
        data = elem.value or b""
        if data.isascii():
            return data.decode("ascii").strip("\x00 ")
    value = ds[tag].value
    return "" if value is None else str(value).strip("\x00 ")


def _transfer_syntax(ds: Dataset) -> str:
    """The dataset's transfer syntax UID from its file meta, read raw when it is ("" if none)."""
    meta = ds.__dict__.get("file_meta")
    if meta is None:
        return ""
    elem = meta._dict.get(BaseTag(0x00020010))
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement):
        return bytes(elem.value or b"").decode("ascii", "replace").strip("\x00 ")
    return str(elem.value or "").strip("\x00 ")


def _is_implicit(ds: Dataset) -> bool:
    ts = _transfer_syntax(ds)
    return ts == "1.2.840.10008.1.2" or (bool(ts) and ts != "1.2.840.10008.1.2.1" and UID(ts).is_implicit_VR)


def _is_little_endian(ds: Dataset) -> bool:
    ts = _transfer_syntax(ds)
    return ts in ("", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1") or UID(ts).is_little_endian


def _set_text(ds: Dataset, tag: int, vr: str, value: str) -> None:
    """Set an element; ASCII values go in as raw bytes (no charset encoding needed)."""
    if value.isascii() and "\\" not in value:
        data = _pad(value.encode("ascii"), b" ")
        ds._dict[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(data), data, 0, _is_implicit(ds), True, True,
                                                False)
    else:
        ds.add_new(tag, vr, value)


def _pad(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


_RAW_DUMMY: dict[str, bytes] = {
    "PN": b"ANONYMOUS ", "DA": b"19000101", "DT": b"19000101000000", "TM": b"000000", "AS": b"000Y",
    "DS": b"0 ", "IS": b"0 ", "SH": b"ANONYMIZED", "LO": b"ANONYMIZED", "ST": b"ANONYMIZED",
    "LT": b"ANONYMIZED", "UT": b"ANONYMIZED", "UC": b"ANONYMIZED", "CS": b"ANONYMIZED", "AE": b"ANONYMIZED",
    "US": b"\x00\x00", "SS": b"\x00\x00", "UL": b"\x00" * 4, "SL": b"\x00" * 4, "FL": b"\x00" * 4,
    "FD": b"\x00" * 8, "UV": b"\x00" * 8, "SV": b"\x00" * 8, "AT": b"\x00" * 4,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "UN": b"\x00\x00",
}


def _shift_one(text: str, vr: str, offset: int) -> str | None:
    text = text.strip()
    if not text:
        return ""
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        shifted = day + _dt.timedelta(days=offset)
    except (ValueError, OverflowError):
        return None
    if vr == "DA" and len(text) != 8:
        return None
    return shifted.strftime("%Y%m%d") + text[8:]


def _shift(value: Any, vr: str, offset: int) -> tuple[bool, Any]:
    """Shift DA/DT value(s) by ``offset`` days; invalid or partial values become empty."""
    if value is None:
        return True, value
    values: Iterable[Any] = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    ok = True
    for v in values:
        s = _shift_one(str(v), vr, offset)
        if s is None:
            ok = False
            continue
        out.append(s)
    if not out:
        return ok, None
    return ok, out if len(out) > 1 else out[0]


__all__ = ["BaseTag", "DeidStage", "build_actions"]
