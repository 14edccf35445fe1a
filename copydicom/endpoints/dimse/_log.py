"""Keep patient data out of pynetdicom's logging.

At INFO pynetdicom logs every message, at DEBUG it dumps datasets and UIDs, and
its ``LOG_REQUEST_IDENTIFIERS``/``LOG_RESPONSE_IDENTIFIERS`` switches (on by
default) print C-FIND/C-GET/C-MOVE identifiers.  Called when a DIMSE module is
first imported.
"""

from __future__ import annotations

import logging


def quiet_pynetdicom() -> None:
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
