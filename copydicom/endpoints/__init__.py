"""Endpoint packages: one per system copydicom talks to, each exporting one descriptor.

:data:`BUILTIN` is the one list of built-in endpoint types that
:mod:`copydicom.registry` loads; adding a type is one package here plus one
line in this tuple.  Each package's ``__init__`` stays light (no heavy
imports at module level): its factories import the client libraries.
"""

from __future__ import annotations

from typing import Any

from copydicom.endpoints import dimse
from copydicom.registry import EndpointType

BUILTIN: tuple[EndpointType[Any], ...] = (*dimse.ENDPOINTS,)
