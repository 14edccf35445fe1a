"""The ``requests.Session`` of an HTTP endpoint (Orthanc REST, DICOMweb), configured in one place."""

from __future__ import annotations

import logging
from typing import Any

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)


def endpoint_session(config: Any, *, pool_size: int) -> requests.Session:
    """A session with the endpoint's basic auth, TLS settings and a connection pool for ``pool_size`` callers.

    ``config`` has ``name``, ``user``, ``password``, ``ca_bundle`` and ``insecure_skip_verify``. Retries are
    the caller's (:mod:`copydicom.retry`), so the adapter makes none. Proxies and ``.netrc`` from the
    environment are ignored: they cost a lookup per request, and peers are addressed directly.
    """
    session = requests.Session()
    session.trust_env = False
    if config.user is not None:
        session.auth = (config.user, config.password or "")
    if config.insecure_skip_verify:
        log.warning("TLS verification is DISABLED for endpoint %s (insecure_skip_verify: true)", config.name)
        session.verify = False
    elif config.ca_bundle:
        session.verify = config.ca_bundle
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(2, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
