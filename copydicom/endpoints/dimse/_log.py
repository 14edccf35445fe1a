"""Keep pynetdicom's own logging to warnings: at INFO it logs every message, at DEBUG it dumps
datasets and UIDs (patient data).  Called when a DIMSE module is first imported."""

from __future__ import annotations

import logging


def quiet_pynetdicom() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
