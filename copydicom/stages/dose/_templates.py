"""Template readers for radiation dose SRs, one class per PS3.16 template.

Each class has ``from_item(item, ctx, ...)`` (or ``from_dataset`` for the
document templates) and turns the content tree into plain dicts in the field
names of the dose documents (see :mod:`copydicom.stages.dose`).  Values are
found by concept code (:mod:`._codes`), never by meaning text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from copydicom.stages.dose import _codes as c
from copydicom.stages.dose._content import ContentItem, Context, put_number, put_numbers


def _int_fields(section: dict[str, Any], *names: str) -> None:
    for name in names:
        value = section.get(name)
        if isinstance(value, float) and value.is_integer():
            section[name] = int(value)


def _event_common(item: ContentItem, ctx: Context, index: int, path: str) -> dict[str, Any]:
    """Fields shared by TID 10013 and TID 10003 events."""
    uid_item = item.find(c.IRRADIATION_EVENT_UID)
    protocol_item = item.find(c.ACQUISITION_PROTOCOL)
    region_item = item.find(c.TARGET_REGION)
    event: dict[str, Any] = {
        "uid": uid_item.text(ctx, f"{path}.uid") if uid_item else None,
        "index": index,
        "protocol": protocol_item.text(ctx, f"{path}.protocol") if protocol_item else None,
        "target_region": region_item.code_dict() if region_item else None,
        "type": None,
        "comment": None,
    }
    comment = item.find(c.COMMENT)
    if comment is not None:
        event["comment"] = comment.text(ctx, f"{path}.comment")
    if event["protocol"] is None:
        ctx.warnings.append(f"{path}.protocol: no acquisition protocol")
    if region_item is not None and (event["target_region"] or {}).get("code") is None:
        ctx.warnings.append(f"{path}.target_region: empty code value")
    return event


@dataclass
class CtXRaySource:
    """One X-ray source of a CT event (TID 10013, row "CT X-Ray Source Parameters")."""

    data: dict[str, Any]

    @classmethod
    def from_item(cls, item: ContentItem, ctx: Context, path: str) -> CtXRaySource:
        ident = item.find(c.IDENTIFICATION_OF_XRAY_SOURCE)
        data: dict[str, Any] = {"id": ident.text(ctx, f"{path}.id") if ident else None}
        put_number(data, "kvp_kv", item.find(c.KVP), "kv", ctx, path)
        put_number(data, "max_tube_current_ma", item.find(c.MAXIMUM_XRAY_TUBE_CURRENT), "ma", ctx, path)
        put_number(data, "tube_current_ma", item.find(c.XRAY_TUBE_CURRENT), "ma", ctx, path)
        put_number(data, "exposure_time_per_rotation_s", item.find(c.EXPOSURE_TIME_PER_ROTATION), "s", ctx, path)
        return cls(data)


@dataclass
class CtIrradiationEvent:
    """TID 10013 CT Irradiation Event Data (one "CT Acquisition" container)."""

    event: dict[str, Any]
    ct: dict[str, Any]
    warnings: list[str]

    @classmethod
    def from_item(cls, item: ContentItem, ctx: Context, index: int) -> CtIrradiationEvent:
        ev_ctx = Context(ctx.encodings, ctx.charset_name)
        event = _event_common(item, ev_ctx, index, "event")
        type_item = item.find(c.CT_ACQUISITION_TYPE)
        event["type"] = type_item.code_dict() if type_item else None
        ct: dict[str, Any] = {}
        params = item.find(c.CT_ACQUISITION_PARAMETERS) or item
        put_number(ct, "exposure_time_s", params.find(c.EXPOSURE_TIME_CT), "s", ev_ctx, "ct")
        put_number(ct, "scan_length_mm", params.search(c.SCANNING_LENGTH), "mm", ev_ctx, "ct")
        put_number(ct, "nominal_single_collimation_mm", params.find(c.NOMINAL_SINGLE_COLLIMATION_WIDTH),
                   "mm", ev_ctx, "ct")
        put_number(ct, "nominal_total_collimation_mm", params.find(c.NOMINAL_TOTAL_COLLIMATION_WIDTH),
                   "mm", ev_ctx, "ct")
        put_number(ct, "pitch", params.find(c.PITCH_FACTOR), "ratio", ev_ctx, "ct")
        put_number(ct, "number_of_sources", params.find(c.NUMBER_OF_XRAY_SOURCES), "count", ev_ctx, "ct")
        _int_fields(ct, "number_of_sources")
        ct["sources"] = [
            CtXRaySource.from_item(src, ev_ctx, f"ct.sources[{i}]").data
            for i, src in enumerate(params.find_all(c.CT_XRAY_SOURCE_PARAMETERS))
        ]
        dose = item.find(c.CT_DOSE)
        phantom = dose.find(c.CTDIW_PHANTOM_TYPE) if dose else None
        ct["phantom"] = phantom.code_dict() if phantom else None
        put_number(ct, "ctdivol_mgy", dose.find(c.MEAN_CTDIVOL) if dose else None, "mgy", ev_ctx, "ct")
        put_number(ct, "dlp_mgy_cm", dose.find(c.DLP) if dose else None, "mgy_cm", ev_ctx, "ct")
        put_number(ct, "effective_dose_msv", dose.find(c.EFFECTIVE_DOSE) if dose else None, "msv", ev_ctx, "ct")
        return cls(event, ct, ev_ctx.warnings)


@dataclass
class XRayIrradiationEvent:
    """TID 10003 Irradiation Event X-Ray Data (with TID 10003A/10003B rows).

    Source and detector rows are looked up anywhere under the event container,
    since vendors nest them differently.
    """

    event: dict[str, Any]
    projection: dict[str, Any]
    mammo: dict[str, Any] | None
    warnings: list[str]

    @classmethod
    def from_item(
        cls, item: ContentItem, ctx: Context, index: int, mammography: bool
    ) -> XRayIrradiationEvent:
        ev_ctx = Context(ctx.encodings, ctx.charset_name)
        event = _event_common(item, ev_ctx, index, "event")
        type_item = item.find(c.IRRADIATION_EVENT_TYPE)
        event["type"] = type_item.code_dict() if type_item else None
        plane_item = item.find(c.ACQUISITION_PLANE)
        plane_code = plane_item.code_value() if plane_item else None
        p: dict[str, Any] = {"plane": c.PLANE_NAMES.get(plane_code) if plane_code else None}
        put_number(p, "dap_gy_m2", item.search(c.DOSE_AREA_PRODUCT), "gy_m2", ev_ctx, "projection")
        put_number(p, "dose_rp_mgy", item.search(c.DOSE_RP), "mgy", ev_ctx, "projection")
        put_number(p, "entrance_exposure_mgy", item.search(c.ENTRANCE_EXPOSURE_AT_RP), "mgy", ev_ctx, "projection")
        put_number(p, "kvp_kv", item.search(c.KVP), "kv", ev_ctx, "projection")
        put_number(p, "tube_current_ma", item.search(c.XRAY_TUBE_CURRENT), "ma", ev_ctx, "projection")
        put_number(p, "average_tube_current_ma", item.search(c.AVERAGE_XRAY_TUBE_CURRENT), "ma", ev_ctx,
                   "projection")
        # Exposure Time: the current code 113824 first, else the retired 113735; normalised to ms.
        exposure_time = item.search(c.EXPOSURE_TIME_CT) or item.search(c.EXPOSURE_TIME_XRAY)
        put_number(p, "exposure_time_ms", exposure_time, "ms", ev_ctx, "projection")
        if exposure_time is not None and exposure_time.name is not None and "exposure_time_ms" in p.get("raw", {}):
            p["raw"]["exposure_time_ms"]["code"] = exposure_time.name.value
        put_number(p, "exposure_uas", item.search(c.EXPOSURE), "uas", ev_ctx, "projection")
        put_number(p, "irradiation_duration_s", item.search(c.IRRADIATION_DURATION), "s", ev_ctx, "projection")
        put_number(p, "pulse_rate_per_s", item.search(c.PULSE_RATE), "per_s", ev_ctx, "projection")
        put_number(p, "number_of_pulses", item.search(c.NUMBER_OF_PULSES), "count", ev_ctx, "projection")
        put_number(p, "pulse_width_ms", item.search(c.PULSE_WIDTH), "ms", ev_ctx, "projection")
        _int_fields(p, "number_of_pulses")
        # Every row of the event (one per pulse on some equipment): ``<field>_values`` beside the first value.
        for name, codes, unit in _REPEATED_ROWS:
            rows = [row for code in codes for row in item.search_all(code)]
            put_numbers(p, name, rows, unit, ev_ctx, "projection")
        fluoro_mode = item.search(c.FLUORO_MODE)
        p["fluoro_mode"] = fluoro_mode.code_dict() if fluoro_mode else None
        mammo: dict[str, Any] | None = None
        agd = item.search(c.AVERAGE_GLANDULAR_DOSE)
        if mammography or agd is not None:
            mammo = {}
            put_number(mammo, "agd_mgy", agd, "mgy", ev_ctx, "mammo")
            lat = item.search(c.LATERALITY)
            lat_code = lat.code_value() if lat else None
            mammo["laterality"] = c.LATERALITY_NAMES.get(lat_code) if lat_code else None
            if lat is not None and mammo["laterality"] is None:
                ev_ctx.warnings.append("mammo.laterality: unrecognised laterality code")
        return cls(event, p, mammo, ev_ctx.warnings)


_REPEATED_ROWS: tuple[tuple[str, tuple[c.Concept, ...], str], ...] = (
    ("kvp_kv", (c.KVP,), "kv"),
    ("tube_current_ma", (c.XRAY_TUBE_CURRENT,), "ma"),
    ("average_tube_current_ma", (c.AVERAGE_XRAY_TUBE_CURRENT,), "ma"),
    ("exposure_time_ms", (c.EXPOSURE_TIME_CT, c.EXPOSURE_TIME_XRAY), "ms"),
    ("exposure_uas", (c.EXPOSURE,), "uas"),
    ("pulse_width_ms", (c.PULSE_WIDTH,), "ms"),
)


_TOTAL_FIELDS: tuple[tuple[str, c.Concept, str], ...] = (
    ("dap_gy_m2", c.DOSE_AREA_PRODUCT_TOTAL, "gy_m2"),
    ("dose_rp_mgy", c.DOSE_RP_TOTAL, "mgy"),
    ("fluoro_dap_gy_m2", c.FLUORO_DOSE_AREA_PRODUCT_TOTAL, "gy_m2"),
    ("acquisition_dap_gy_m2", c.ACQUISITION_DOSE_AREA_PRODUCT_TOTAL, "gy_m2"),
    ("fluoro_dose_rp_mgy", c.FLUORO_DOSE_RP_TOTAL, "mgy"),
    ("acquisition_dose_rp_mgy", c.ACQUISITION_DOSE_RP_TOTAL, "mgy"),
    ("fluoro_time_s", c.TOTAL_FLUORO_TIME, "s"),
    ("acquisition_time_s", c.TOTAL_ACQUISITION_TIME, "s"),
    ("radiographic_frames", c.TOTAL_NUMBER_OF_RADIOGRAPHIC_FRAMES, "count"),
)


@dataclass
class AccumulatedXRayDose:
    """TID 10002 Accumulated X-Ray Dose with TID 10004/10005/10006/10007 contents.

    One instance per "Accumulated X-Ray Dose Data" container (one per plane).
    """

    plane: str | None
    totals: dict[str, Any]
    agd_by_laterality: dict[str, Any]

    @classmethod
    def from_item(cls, item: ContentItem, ctx: Context) -> AccumulatedXRayDose:
        plane_item = item.find(c.ACQUISITION_PLANE)
        plane_code = plane_item.code_value() if plane_item else None
        plane = c.PLANE_NAMES.get(plane_code) if plane_code else None
        totals: dict[str, Any] = {}
        for name, code, unit in _TOTAL_FIELDS:
            put_number(totals, name, item.search(code), unit, ctx, "totals")
        _int_fields(totals, "radiographic_frames")
        agd: dict[str, Any] = {}
        for node in item.walk():
            if node.name != c.ACCUMULATED_AVERAGE_GLANDULAR_DOSE:
                continue
            lat = node.find(c.LATERALITY)
            lat_code = lat.code_value() if lat else None
            side = c.LATERALITY_NAMES.get(lat_code) if lat_code else None
            put_number(agd, side or "unspecified", node, "mgy", ctx, "totals.agd_mgy_by_laterality")
        return cls(plane, totals, agd)


@dataclass
class DoseReport:
    """What a document template yields: events and the report's own totals."""

    TEMPLATE: ClassVar[str] = ""
    events: list[tuple[dict[str, Any], dict[str, dict[str, Any] | None], list[str]]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def template(self) -> str:
        return self.TEMPLATE


class CtRadiationDose(DoseReport):
    """TID 10011 CT Radiation Dose (accumulated data TID 10012, events TID 10013)."""

    TEMPLATE = "TID 10011"

    @classmethod
    def from_root(cls, root: ContentItem, ctx: Context) -> CtRadiationDose:
        report = cls()
        for index, node in enumerate(root.find_all(c.CT_ACQUISITION)):
            ev = CtIrradiationEvent.from_item(node, ctx, index)
            report.events.append((ev.event, {"ct": ev.ct}, ev.warnings))
        acc = root.find(c.CT_ACCUMULATED_DOSE_DATA)
        t: dict[str, Any] = {}
        put_number(t, "event_count", acc.find(c.TOTAL_NUMBER_OF_IRRADIATION_EVENTS) if acc else None,
                   "count", ctx, "totals")
        put_number(t, "ct_dlp_mgy_cm", acc.find(c.CT_DOSE_LENGTH_PRODUCT_TOTAL) if acc else None,
                   "mgy_cm", ctx, "totals")
        put_number(t, "ct_effective_dose_msv", acc.find(c.CT_EFFECTIVE_DOSE_TOTAL) if acc else None,
                   "msv", ctx, "totals")
        _int_fields(t, "event_count")
        if acc is None:
            ctx.warnings.append("totals: no CT Accumulated Dose Data container")
        report.totals = t
        return report


class ProjectionXRayRadiationDose(DoseReport):
    """TID 10001 Projection X-Ray Radiation Dose (fluoroscopy, radiography, mammography).

    Accumulated data per plane (TID 10002) and events (TID 10003).  With two
    planes the per-plane totals go to ``totals.by_plane``; the report's totals
    are never re-summed.
    """

    TEMPLATE = "TID 10001"

    @classmethod
    def from_root(cls, root: ContentItem, ctx: Context) -> ProjectionXRayRadiationDose:
        report = cls()
        proc = root.find(c.PROCEDURE_REPORTED)
        mammography = proc is not None and proc.code_value() == c.MAMMOGRAPHY
        for index, node in enumerate(root.find_all(c.IRRADIATION_EVENT_XRAY_DATA)):
            ev = XRayIrradiationEvent.from_item(node, ctx, index, mammography)
            sections: dict[str, dict[str, Any] | None] = {"projection": ev.projection}
            if ev.mammo is not None:
                sections["mammo"] = ev.mammo
            report.events.append((ev.event, sections, ev.warnings))
        accumulated = [AccumulatedXRayDose.from_item(n, ctx) for n in root.find_all(c.ACCUMULATED_XRAY_DOSE_DATA)]
        names = [name for name, _code, _unit in _TOTAL_FIELDS]
        totals: dict[str, Any] = {"event_count": None, **{n: None for n in names}}
        if len(accumulated) == 1:
            totals.update(accumulated[0].totals)
        elif len(accumulated) > 1:
            totals["by_plane"] = {(a.plane or f"plane{i}"): a.totals for i, a in enumerate(accumulated)}
        agd: dict[str, Any] = {}
        for a in accumulated:
            for key, value in a.agd_by_laterality.items():
                if key == "raw":
                    agd.setdefault("raw", {}).update(value)
                else:
                    agd[key] = value
        if agd or mammography:
            totals["agd_mgy_by_laterality"] = agd
        if not accumulated:
            ctx.warnings.append("totals: no Accumulated X-Ray Dose Data container")
        report.totals = totals
        return report


_ADMINISTRATION_TYPE = {"code": "113502", "scheme": "DCM", "meaning": "Radiopharmaceutical Administration",
                        "concept": "DCM:113502"}


def _organ_doses(nodes: list[ContentItem], ctx: Context, path: str) -> list[dict[str, Any]]:
    """TID 10023 Organ Dose rows: organ (Finding Site), laterality, dose in mGy, reference authority."""
    out = []
    for j, node in enumerate(nodes):
        where = f"{path}.organ_doses[{j}]"
        site = node.search(c.FINDING_SITE)
        lat = node.search(c.LATERALITY)
        lat_code = lat.code_value() if lat else None
        authority = node.search(c.REFERENCE_AUTHORITY)
        od: dict[str, Any] = {
            "organ": site.code_dict() if site else None,
            "laterality": c.LATERALITY_NAMES.get(lat_code) if lat_code else None,
            "reference_authority": None,
        }
        if authority is not None:
            od["reference_authority"] = (authority.code_dict() if authority.value_type == "CODE"
                                         else authority.text(ctx, f"{where}.reference_authority"))
        put_number(od, "dose_mgy", node.search(c.ORGAN_DOSE), "mgy", ctx, where)
        if site is None:
            ctx.warnings.append(f"{where}.organ: no Finding Site")
        out.append(od)
    return out


class RadiopharmaceuticalRadiationDose(DoseReport):
    """TID 10021 Radiopharmaceutical Radiation Dose: one event per administration (TID 10022),
    with its organ doses (TID 10023)."""

    TEMPLATE = "TID 10021"

    @classmethod
    def from_root(cls, root: ContentItem, ctx: Context) -> RadiopharmaceuticalRadiationDose:
        report = cls()
        admins = [n for n in root.walk() if n.name == c.RADIOPHARMACEUTICAL_ADMINISTRATION] or [root]
        # Organ dose containers outside any administration belong to the only one, if there is one.
        loose = [n for n in root.find_all(c.ORGAN_DOSE_INFORMATION)] if len(admins) == 1 and admins[0] is not root \
            else []
        items = []
        for i, admin in enumerate(admins):
            path = f"radiopharmaceutical[{i}]"
            ev_ctx = Context(ctx.encodings, ctx.charset_name)
            agent = admin.search(c.RADIOPHARMACEUTICAL_AGENT)
            nuclide = admin.search(c.RADIONUCLIDE)
            uid = admin.search(c.RADIOPHARMACEUTICAL_ADMINISTRATION_EVENT_UID)
            route = admin.search(c.ROUTE_OF_ADMINISTRATION)
            start = admin.search(c.RADIOPHARMACEUTICAL_START)
            stop = admin.search(c.RADIOPHARMACEUTICAL_STOP)
            data: dict[str, Any] = {
                "administration_uid": uid.text(ctx, path) if uid else None,
                "agent": agent.code_dict() if agent else None,
                "radionuclide": nuclide.code_dict() if nuclide else None,
                "route": route.code_dict() if route else None,
                "start": start.text(ctx, f"{path}.start") if start else None,
                "stop": stop.text(ctx, f"{path}.stop") if stop else None,
            }
            if agent is not None and agent.value_type == "TEXT":
                data["agent"] = {"code": None, "scheme": None, "meaning": agent.text(ctx, path), "concept": None}
            put_number(data, "administered_activity_mbq", admin.search(c.ADMINISTERED_ACTIVITY), "mbq", ev_ctx, path)
            put_number(data, "effective_dose_msv", admin.search(c.EFFECTIVE_DOSE) or root.search(c.EFFECTIVE_DOSE),
                       "msv", ev_ctx, path)
            data["organ_doses"] = _organ_doses(admin.search_all(c.ORGAN_DOSE_INFORMATION) + loose, ev_ctx, path)
            items.append(data)
            event = {"uid": data["administration_uid"], "index": i, "protocol": None, "target_region": None,
                     "type": dict(_ADMINISTRATION_TYPE), "comment": None}
            report.events.append((event, {"radiopharmaceutical": _deep_copy(data)}, ev_ctx.warnings))
            ctx.warnings.extend(ev_ctx.warnings)
        report.totals = {"event_count": len(admins)}
        report.extra = {"radiopharmaceutical": items[0], "radiopharmaceutical_administrations": items}
        return report


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a JSON-like dict, so an event and the summary never share mutable parts."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = _deep_copy(value)
        elif isinstance(value, list):
            out[key] = [_deep_copy(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


#: Document template readers, by template identifier (PS3.16).
TEMPLATES: dict[str, type[DoseReport]] = {
    "10011": CtRadiationDose,
    "10001": ProjectionXRayRadiationDose,
    "10021": RadiopharmaceuticalRadiationDose,
}
