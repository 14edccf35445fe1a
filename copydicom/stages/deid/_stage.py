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
from collections.abc import Iterable
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
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
from copydicom.stages.deid._writer import write_part10
from copydicom.stages.pixels import cleaner_for

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


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def build_actions(profile: DeidProfile) -> tuple[dict[int, str], str, str, str, str]:
    """Precompute ``{tag: action}`` and the actions for curves, overlay data,
    overlay comments and private attributes under ``profile``."""
    actions: dict[int, str] = {}
    curve = overlay_data = overlay_comments = private = "X"
    for row in rows():
        code = row_action(row, profile.options)
        if row.tag == "private":
            private = code
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

    __slots__ = ("audit", "idents", "invalid_dates", "offset", "seen", "uids")

    def __init__(self, offset: int, idents: list[str]) -> None:
        self.offset = offset
        self.idents = idents
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

    def __init__(self, profile: DeidProfile, key: bytes, mapping_store: MappingStore | None = None) -> None:
        if len(key) < 16:
            raise ValueError("de-identification key must have at least 16 bytes")
        quiet_pydicom_values()
        self.profile = profile
        self._key = key
        self._store = mapping_store
        (self._actions, self._curve, self._overlay_data, self._overlay_comments,
         self._private) = build_actions(profile)
        self._retain_uids = "retain_uids" in profile.options
        self._modified_dates = "retain_long_modified_dates" in profile.options
        self._full_dates = "retain_long_full_dates" in profile.options
        self._safe = safe_private() if self._private == "C" else frozenset()
        self._method = self._method_items()
        self._codes = {imp: self._encoded_codes(imp) for imp in (False, True)}
        temporal = "UNMODIFIED" if self._full_dates else "MODIFIED" if self._modified_dates else "REMOVED"
        self._marks: dict[int, tuple[str, str]] = {
            0x00120062: ("CS", "YES"),
            0x00120063: ("LO", f"copydicom {profile.name}; {edition()} E.1-1"[:64]),
            METHOD_CODES: ("SQ", ""),
            0x00280303: ("CS", temporal),
        }
        # Clean Pixel Data option (copydicom.stages.pixels); without it, the pixel-risk gate.
        self._pixels = cleaner_for(profile.options, profile.pixels)

    # -- identity -----------------------------------------------------------------

    def pseudonym(self, patient_id: str) -> tuple[str, str]:
        """``(new PatientID, new PatientName)`` for an original PatientID.

        Raises DeidentificationError if the patient map has no entry and its
        policy is ``quarantine``.
        """
        pmap = self.profile.patient_map
        if pmap is not None:
            if patient_id in pmap.ids:
                new = pmap.ids[patient_id]
                return new, pmap.names.get(patient_id, new)
            if pmap.missing == "quarantine":
                raise DeidentificationError("PatientID not in the patient map (policy: quarantine)")
        new = keyed_pseudonym(self._key, patient_id, self.profile.pseudonym_prefix)
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
            self.pseudonym(identity.patient_id)[0],
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
        ds = instance.dataset
        if ds is None:
            try:
                try:
                    ds = dcmread(io.BytesIO(instance.data), force=False)
                except InvalidDicomError:  # no Part 10 preamble: a bare dataset, written out as Part 10
                    ds = dcmread(io.BytesIO(instance.data), force=True)
            except (InvalidDicomError, EOFError, ValueError, TypeError, struct.error) as exc:
                raise InvalidInstance(f"not readable as DICOM: {type(exc).__name__}") from None
        try:
            sop_class = _peek(ds, 0x00080016)
            out_ds, audit, uids, pid_pair = self._deidentify(ds)
            data = self._write(out_ds)
        except (DeidentificationError, PixelRiskError, InvalidInstance):
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed element must quarantine, not crash the pipeline
            raise DeidentificationError(f"de-identification failed: {type(exc).__name__}") from None
        self._validate(data, out_ds, sop_class)
        if self._store is not None:
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
        if not sop_class or 0x00080018 not in ds._dict:
            raise InvalidInstance("no SOP Class UID or SOP Instance UID")
        pixels = self._pixels.clean(ds) if self._pixels is not None else None  # None: no pixel data
        if pixels is None:
            self._pixel_gate(ds, sop_class)
        old_pid = _peek(ds, PATIENT_ID)
        new_pid, new_name = self.pseudonym(old_pid)
        lo, hi = self.profile.date_shift_days
        ctx = _Ctx(date_offset_days(self._key, old_pid, lo, hi), self._identifiers(ds))
        if pixels is not None:
            ctx.note("(7FE0,0010)", f"C(clean_pixel_data {pixels.summary()})")
        self._walk(ds, ctx, "")
        _set_text(ds, PATIENT_ID, "LO", new_pid)
        _set_text(ds, PATIENT_NAME, "PN", new_name)
        ctx.note(_fmt(PATIENT_ID), "Z")
        ctx.note(_fmt(PATIENT_NAME), "Z")
        self._mark(ds)
        return ds, ctx.audit, ctx.uids, (old_pid, new_pid)

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

    def _walk(self, ds: Dataset, ctx: _Ctx, path: str, in_content: bool = False) -> None:
        actions = self._actions
        for tag in list(ds._dict):
            group = tag >> 16
            elem = ds.get_item(tag)
            if elem is None:
                continue
            if group & 1:
                self._private_elem(ds, tag, ctx, path)
                continue
            action = actions.get(tag)
            if action is None:
                if group & 0xFF00 == 0x5000:
                    action = self._curve
                elif group & 0xFF00 == 0x6000:
                    low = tag & 0xFFFF
                    action = self._overlay_data if low == 0x3000 else self._overlay_comments if low == 0x4000 else None
                if action is None:
                    if in_content and tag == TEXT_VALUE:
                        self._clean(ds, tag, "UT", ctx, path)
                        ctx.note(path + _fmt(tag), "C")
                    elif _vr_of(tag, elem) == "SQ":
                        self._walk_seq(ds, tag, ctx, path, in_content)
                    continue
            self._apply(ds, tag, elem, action, ctx, path)

    def _walk_seq(self, ds: Dataset, tag: int, ctx: _Ctx, path: str, in_content: bool) -> None:
        seq = ds[tag].value
        if not seq:
            return
        sub = f"{path}{_fmt(tag)}>"
        content = in_content or tag == CONTENT_SEQUENCE
        for item in seq:
            self._walk(item, ctx, sub, content)

    def _apply(self, ds: Dataset, tag: int, raw: Any, action: str, ctx: _Ctx, path: str) -> None:
        where = path + _fmt(tag)
        if action == "K":
            if _vr_of(tag, raw) == "SQ":
                self._walk_seq(ds, tag, ctx, path, False)
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
            if action in ("Z", "D"):
                elem.value = Sequence([])
            else:  # C / U: keep and walk the subtree
                if tag == CONTENT_SEQUENCE and action == "C":
                    self._walk_seq(ds, tag, ctx, path, True)
                else:
                    self._walk_seq(ds, tag, ctx, path, False)
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
        text = value
        for ident in ctx.idents:
            text = re.sub(re.escape(ident), "*", text, flags=re.IGNORECASE)
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
        old_meta = getattr(ds, "file_meta", None)
        ts = old_meta.get("TransferSyntaxUID") if old_meta is not None else None
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(_peek(ds, 0x00080016))
        meta.MediaStorageSOPInstanceUID = UID(_peek(ds, 0x00080018))
        meta.TransferSyntaxUID = UID(str(ts or "1.2.840.10008.1.2.1"))
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "COPYDICOM"
        return write_part10(ds, meta)

    def _validate(self, data: bytes, ds: Dataset, sop_class: str) -> None:
        """Validation gate: the output must re-parse and keep its Type 1 identity."""
        try:
            check = dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure quarantines
            raise InvalidInstance(f"de-identified output is not readable: {type(exc).__name__}") from None
        if str(check.get("SOPClassUID", "")) != sop_class:
            raise InvalidInstance("SOP Class UID changed or missing after de-identification")
        for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not is_valid_uid(str(check.get(kw, "") or "")):
                raise InvalidInstance(f"{kw} missing or not a valid UID after de-identification")
        if str(check.file_meta.get("MediaStorageSOPInstanceUID", "")) != str(check.SOPInstanceUID):
            raise InvalidInstance("file meta SOP Instance UID differs from the dataset's")
        if any(t in ds for t in PIXEL_TAGS):
            for kw in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation"):
                if check.get(kw) in (None, ""):
                    raise InvalidInstance(f"Type 1 attribute {kw} missing after de-identification")
        if check.get("PatientIdentityRemoved") != "YES":
            raise InvalidInstance("Patient Identity Removed is not YES")


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


def _is_implicit(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return bool(ts is not None and UID(str(ts)).is_implicit_VR)


def _is_little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return ts is None or UID(str(ts)).is_little_endian


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
