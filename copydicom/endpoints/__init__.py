"""Endpoint packages: one per system copydicom talks to, each exporting one descriptor.

:data:`BUILTIN` is the one list of built-in endpoint types that
:mod:`copydicom.registry` loads; adding a type is one package here plus one
line in this tuple.  Each package's ``__init__`` stays light (no heavy
imports at module level): its factories import the client libraries.
"""

from __future__ import annotations

from typing import Any

from copydicom.endpoints.dimse import DIMSE, LISTENER
from copydicom.endpoints.dicomweb import ENDPOINT as DICOMWEB
from copydicom.endpoints.elasticsearch import ENDPOINT as ELASTICSEARCH
from copydicom.endpoints.folder import ENDPOINT as FOLDER
from copydicom.endpoints.orthanc import ENDPOINT as ORTHANC
from copydicom.endpoints.s3 import ENDPOINT as S3
from copydicom.endpoints.splunk import ENDPOINT as SPLUNK
from copydicom.endpoints.sqlite import ENDPOINT as SQLITE
from copydicom.registry import EndpointType

BUILTIN: tuple[EndpointType[Any], ...] = (ORTHANC, S3, SQLITE, ELASTICSEARCH, SPLUNK, FOLDER, DICOMWEB, DIMSE, LISTENER)
