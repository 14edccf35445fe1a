"""DIMSE networking (pynetdicom): a C-STORE receiver source and a DICOM node endpoint.

Two descriptors:

``dimse_listener`` (source)
    copydicom receives C-STORE pushes into a durable spool that feeds the
    route's pipeline (:mod:`.listener`).
``dimse`` (destination and query/retrieve source), URL ``dicom://CALLED_AET@host:port?calling=COPYDICOM``
    C-STORE to a peer (:mod:`.scu`); as a source, C-FIND by study date and
    C-GET or C-MOVE (:mod:`.qr`).

This module stays light: pynetdicom is imported by the factories only.
"""

from __future__ import annotations

from typing import Any

from copydicom.endpoints.dimse._config import DimseConfig, ListenerConfig
from copydicom.model import Destination, Source
from copydicom.registry import BuildContext, EndpointType

__all__ = ["DIMSE", "ENDPOINT", "ENDPOINTS", "LISTENER", "DimseConfig", "ListenerConfig"]


def _listener_source(config: ListenerConfig, context: BuildContext) -> Source:
    from copydicom.endpoints.dimse.listener import ListenerSource

    return ListenerSource(config)


def _qr_source(config: DimseConfig, context: BuildContext) -> Source:
    from copydicom.endpoints.dimse.qr import QueryRetrieveSource

    options: dict[str, Any] = dict(context.options)
    return QueryRetrieveSource(config, since=options.get("since"), until=options.get("until"))


def _destination(config: DimseConfig, context: BuildContext) -> Destination:
    from copydicom.endpoints.dimse.scu import DimseDestination

    return DimseDestination(config)


def _listener_probe(config: ListenerConfig) -> None:
    from copydicom.endpoints.dimse.listener import probe

    probe(config)


LISTENER: EndpointType[ListenerConfig] = EndpointType(
    name="dimse_listener",
    description="C-STORE receiver: DICOM pushes into a durable spool (pynetdicom)",
    schemes=(),
    config=ListenerConfig,
    source=_listener_source,
    extra="dimse",
    requires=("pynetdicom",),
    drives=True,
    probe=_listener_probe,
)

DIMSE: EndpointType[DimseConfig] = EndpointType(
    name="dimse",
    description="DICOM node: C-STORE destination, C-FIND + C-GET/C-MOVE source (pynetdicom)",
    schemes=("dicom",),
    config=DimseConfig,
    source=_qr_source,
    destination=_destination,
    extra="dimse",
    requires=("pynetdicom",),
)

#: Both descriptors, for ``copydicom.endpoints.BUILTIN``.
ENDPOINTS: tuple[EndpointType[Any], ...] = (LISTENER, DIMSE)
#: The contract's one-descriptor name: the DICOM node type (the listener is :data:`LISTENER`).
ENDPOINT = DIMSE
