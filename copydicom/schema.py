"""The JSON Schema of the configuration file (``copydicom check-config --schema``), for editors.

Endpoint entries are a union discriminated on ``type``, built from the
registry: each registered type contributes the schema of its typed config
class (pydantic), so a plug-in type appears without an edit here.  The rest of
the file (top level, routes, triggers, stages, logging, metrics) is described
by the pydantic models below.  :func:`copydicom.config.parse_config` remains
the validator (it checks what a schema cannot: references between sections,
secret files, key modes); a unit test keeps these models' keys equal to the
validator's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from copydicom import registry
from copydicom.console._config import ConsoleConfig
from copydicom.stages.pixels._settings import PIXEL_KEYS

_STRICT = ConfigDict(extra="forbid")


class ChangesTrigger(BaseModel):
    """Poll the source's change feed."""

    model_config = _STRICT
    poll_seconds: float = Field(default=10, gt=0, description="seconds between polls")
    wait_for: Literal["instance", "stable_series", "stable_study"] = "instance"
    start_from: Literal["beginning", "now"] = "beginning"


class CronTrigger(BaseModel):
    """Run an index query on a schedule (conditional replication)."""

    model_config = _STRICT
    schedule: str = Field(description="crontab expression, e.g. '0 2 * * *'")
    query: str = Field(description="the query, in the index's language")
    index: str = Field(description="name of an index endpoint")


class QidoTrigger(BaseModel):
    """Poll a DICOMweb source with QIDO-RS over a sliding StudyDate window."""

    model_config = _STRICT
    poll_seconds: float = Field(default=60, gt=0, description="seconds between polls")
    window: str = Field(default="2h", pattern=r"^\d+(\.\d+)?[smhd]$",
                        description="how far back StudyDate is listed (30m, 2h, 1d)")


class QidoChoice(BaseModel):
    model_config = _STRICT
    qido: QidoTrigger


class ChangesChoice(BaseModel):
    model_config = _STRICT
    changes: ChangesTrigger


class CronChoice(BaseModel):
    model_config = _STRICT
    cron: CronTrigger


class ManualChoice(BaseModel):
    model_config = _STRICT
    manual: dict[str, Any] | None = None


class Stages(BaseModel):
    """Per-route stage switches."""

    model_config = _STRICT
    dose: bool = Field(default=True, description="extract radiation dose into the indexes")


class ReconcileModel(BaseModel):
    """When the daemon reconciles a route (compare source and destinations, repair)."""

    model_config = _STRICT
    cron: str | None = Field(default=None, description="cron schedule of a full reconcile, e.g. '0 3 * * *'")
    on_start: str | None = Field(default=None, description="at start-up, reconcile studies dated within this "
                                 "duration (30s, 5m, 2h, 24h)")
    on_feed_reset: Literal["repair", "hold"] = Field(
        default="repair", description="a reset change feed: reconcile and re-base, or hold the route for an operator")


class RouteModel(BaseModel):
    """One route: a source, optional de-identification, destinations and indexes."""

    model_config = _STRICT
    name: str
    source: str = Field(description="name of a source endpoint")
    destinations: list[str] | str = Field(default_factory=list)
    indexes: list[str] | str = Field(default_factory=list)
    profile: str | None = None
    trigger: ChangesChoice | QidoChoice | CronChoice | ManualChoice | Literal["manual"] | None = None
    workers: int | None = Field(default=None, ge=1)
    stages: Stages | None = None
    index_source_ids: bool = Field(
        default=False, description="de-identifying route: index documents keep the source's Orthanc IDs")
    on_changed_instance: Literal["report", "resend"] = Field(
        default="report", description="a delivered instance whose content changed at the source")
    deletions: Literal["ignore", "report", "propagate"] = Field(
        default="ignore", description="reconcile: instances gone at the source (propagate deletes at destinations)")
    reconcile: ReconcileModel | None = None
    filter: dict[str, Any] | None = Field(
        default=None, description="which instances the route sends: {all|any: [...]}, {not: ...}, "
        "{Keyword or '(gggg,eeee)': value | [values] | 'glob*' | 'YYYYMMDD-YYYYMMDD'}")
    window: str | None = Field(default=None, pattern=r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$",
                               description="working hours, local time, e.g. '19:00-07:00'")
    max_rate: str | None = Field(default=None, description="instances per second read from the source, e.g. '50/s'")


class LoggingModel(BaseModel):
    model_config = _STRICT
    json_lines: bool = Field(default=False, alias="json", description="one JSON object per line")


class MetricsModel(BaseModel):
    model_config = _STRICT
    listen: str = Field(default="127.0.0.1:9108", pattern=r"^.+:\d{1,5}$")
    allow_remote: bool = False
    stale_margin_seconds: float = Field(default=60, ge=0)
    max_backoff_minutes: float = Field(default=15, ge=0)


PROFILE_KEYS = (
    "preset", "options", "key_file", "patient_map", "accept_pixel_risk", "pixel_risk_modalities",
    "pixel_risk_sop_classes", "free_text", "date_shift_days", "pseudonym_prefix", "description",
) + tuple(sorted(PIXEL_KEYS))  # Clean Pixel Data (copydicom.stages.pixels)


class RetainModel(BaseModel):
    """How long PHI at rest is kept (``30d``, ``12h``; ``off`` keeps it until purged by hand)."""

    model_config = _STRICT
    retain: Annotated[str, Field(pattern=r"^(off|[1-9]\d*[smhd])$")] | Literal[False] = "30d"


class StateModel(BaseModel):
    """A PostgreSQL state with its password kept out of the URL (cluster mode)."""

    model_config = _STRICT
    url: str = Field(pattern=r"^postgres(ql)?://", description="postgresql://user@host:5432/db (no password)")
    password: str | None = None
    password_file: str | None = None


class ClusterModel(BaseModel):
    """Scale-out: planner and workers through Celery on RabbitMQ (copydicom/cluster/)."""

    model_config = _STRICT
    broker: str = Field(pattern=r"^amqps?://", description="amqp://user@host:5672/vhost (no password)")
    password: str | None = None
    password_file: str | None = None
    queue: str = "copydicom"
    queue_bound: int = Field(default=200, ge=1)
    batch_size: int = Field(default=100, ge=1)
    delivery_limit: int = Field(default=3, ge=1)
    heartbeat: int = Field(default=5, ge=1)
    retry_cap: int = Field(default=60, ge=1)
    max_concurrency: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    staging: dict[str, str] = Field(
        default_factory=dict, description="listener endpoint -> Orthanc endpoint its instances are staged in")


class TopLevel(BaseModel):
    """A copydicom configuration file."""

    model_config = _STRICT
    state: str | StateModel = Field(
        description="the state: a SQLite file (ledger, quarantine, mappings), or postgresql://user@host/db")
    cluster: ClusterModel | None = Field(default=None, description="scale-out (needs a PostgreSQL state)")
    quarantine_dir: str | None = None
    workers: int = Field(default=4, ge=1)
    endpoints: dict[str, dict[str, Any]] = Field(default_factory=dict)
    profiles: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    routes: list[RouteModel] = Field(default_factory=list)
    logging: LoggingModel | None = None
    metrics: MetricsModel | None = None
    quarantine: RetainModel | None = Field(default=None, description="retention of quarantined bytes")
    index_spool: RetainModel | None = Field(default=None, description="retention of undeliverable documents")
    console: ConsoleConfig | None = Field(default=None, description="the operator's web console (off by default)")


def json_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12), endpoints discriminated on ``type``."""
    schema = TopLevel.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    defs = schema.setdefault("$defs", {})
    choices = []
    mapping = {}
    for endpoint_type in registry.all_types():
        ref = f"endpoint_{endpoint_type.name}"
        type_schema = endpoint_type.json_schema()
        defs.update(type_schema.pop("$defs", {}))
        defs[ref] = type_schema
        choices.append({"$ref": f"#/$defs/{ref}"})
        mapping[endpoint_type.name] = f"#/$defs/{ref}"
    schema["properties"]["endpoints"] = {
        "type": "object",
        "description": "named endpoints; 'type' is one of the registered endpoint types (copydicom endpoints)",
        "additionalProperties": {"oneOf": choices, "discriminator": {"propertyName": "type", "mapping": mapping}},
    }
    schema["properties"]["profiles"] = {
        "type": "object",
        "description": "de-identification profiles (DICOM PS3.15 Annex E)",
        "additionalProperties": {
            "anyOf": [
                {"type": "null"},
                {"type": "object", "properties": {k: {} for k in PROFILE_KEYS}, "additionalProperties": False},
            ]
        },
    }
    return schema
