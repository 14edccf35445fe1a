"""DICOMweb endpoints (PS3.18): QIDO-RS and WADO-RS as a source, STOW-RS as a destination.

URL forms: ``dicomweb+https://user:pass@host/dicom-web`` and ``dicomweb+http://...``
(options as a query: ``?mode=metadata``, ``?retrieve=instance``); in the
configuration ``type: dicomweb`` with ``url``, ``user`` + ``password`` (basic)
or ``token`` (bearer), each secret also as ``${ENV}`` or ``*_file``, and
``ca_bundle``.  This module stays light: the factories import the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from copydicom.endpoints.dicomweb._config import SCHEMES, DicomwebConfig
from copydicom.registry import BuildContext, EndpointType

if TYPE_CHECKING:
    from copydicom.endpoints.dicomweb._client import DicomwebClient
    from copydicom.endpoints.dicomweb._destination import StowDestination
    from copydicom.endpoints.dicomweb._source import DicomwebSource


def _filter_keywords(options: Mapping[str, Any]) -> list[str]:
    value = options.get("filter")
    if value is None:
        return []
    keywords = getattr(value, "keywords", None)
    if keywords is None:
        from copydicom.stages.filters import parse_filter

        keywords = parse_filter(value).keywords
    return sorted(keywords)


def _poll_window(options: Mapping[str, Any]) -> float:
    trigger = options.get("trigger") or {}
    qido = trigger.get("qido") if isinstance(trigger, Mapping) else getattr(trigger, "qido", None)
    window = getattr(qido, "window", None) if qido is not None and not isinstance(qido, Mapping) else (qido or {}).get("window")
    if window is None:
        return 7200.0
    if isinstance(window, (int, float)):
        return float(window)
    return parse_duration(str(window), where="trigger.qido.window")


def parse_duration(text: str, *, where: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d`` -> seconds (the project's duration form)."""
    from copydicom.errors import ConfigError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    try:
        value = float(text[:-1])
        unit = units[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise ConfigError(f"{where}: expected a duration like 30s, 5m, 2h, got {text!r}") from None
    if value <= 0:
        raise ConfigError(f"{where}: must be > 0")
    return value * unit


def make_source(config: DicomwebConfig, ctx: BuildContext) -> DicomwebSource:
    """The source; route options: ``filter`` (attributes to list), ``trigger`` (the QIDO window),
    ``index_only`` (no image destination: headers from ``/metadata``, no pixel download)."""
    from pathlib import Path

    from copydicom.endpoints.dicomweb._client import DicomwebClient
    from copydicom.endpoints.dicomweb._source import DicomwebSource

    update: dict[str, Any] = {}
    if ctx.options.get("index_only") and config.mode != "metadata":
        update["mode"] = "metadata"
    if config.spool_dir is None and isinstance(ctx.state, (str, Path)):
        folder = Path(ctx.state).parent  # series retrievals spool beside the state (not a tmpfs /tmp)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        update["spool_dir"] = str(folder)
    if update:
        config = config.model_copy(update=update)
    client = DicomwebClient(config, pool_size=ctx.pool_size, side="source")
    return DicomwebSource(client, include=_filter_keywords(ctx.options), poll_window=_poll_window(ctx.options))


def make_destination(config: DicomwebConfig, ctx: BuildContext) -> StowDestination:
    """The STOW-RS destination, after :func:`check_url` (a wrong url stops here, before any work)."""
    from copydicom.endpoints.dicomweb._client import DicomwebClient
    from copydicom.endpoints.dicomweb._destination import StowDestination

    check_url(config)
    client = DicomwebClient(config, pool_size=ctx.pool_size, side="destination")
    return StowDestination(client, concurrency=max(1, ctx.pool_size - 2))


def _quick_client(config: DicomwebConfig) -> DicomwebClient:
    from copydicom.endpoints.dicomweb._client import DicomwebClient

    quick = config.model_copy(
        update={"retries": 0, "connect_timeout": min(config.connect_timeout, 2.0), "read_timeout": 5.0}
    )
    return DicomwebClient(quick, pool_size=1, side="destination")


def probe(config: DicomwebConfig) -> str | None:
    """Reachability, credentials and base URL (health checks, ``check-config``): short timeouts, no retries.

    Returns ``None`` when a DICOMweb service answered, or a note ("could not verify the url: ...")
    when the server answered but not in a way that proves the url (see
    :meth:`~copydicom.endpoints.dicomweb._client.DicomwebClient.check_base`); raises
    :class:`~copydicom.errors.ConfigError` for a wrong url or refused credentials and
    :class:`~copydicom.errors.RetryableError` when it cannot be reached.
    """
    client = _quick_client(config)
    try:
        return client.check_base()
    finally:
        client.close()


def check_url(config: DicomwebConfig) -> None:
    """The start-up check of a destination: stop on a wrong url or refused credentials (ConfigError).

    An outage is not a configuration error (the run's own retries deal with it) and a server
    that cannot be verified may still be right: both are logged (endpoint name only) and pass.
    """
    import logging

    from copydicom.errors import RetryableError

    log = logging.getLogger(__name__)
    try:
        note = probe(config)
    except RetryableError as exc:
        log.info("endpoint %s: url not checked at start-up (%s)", config.name, type(exc).__name__)
        return
    if note is not None:
        log.info("endpoint %s: %s", config.name, note)


ENDPOINT: EndpointType[DicomwebConfig] = EndpointType(
    name="dicomweb",
    description="DICOMweb server (QIDO-RS/WADO-RS source, STOW-RS destination; dcm4chee, Orthanc, cloud PACS)",
    schemes=SCHEMES,
    config=DicomwebConfig,
    source=make_source,
    destination=make_destination,
    by_identity=True,
    probe=probe,
)

__all__ = ["ENDPOINT", "DicomwebConfig", "make_destination", "make_source", "check_url", "parse_duration", "probe"]
