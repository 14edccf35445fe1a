"""Orthanc as an image destination (REST ``POST /instances``)."""

from copydicom.sinks.orthanc._destination import OrthancDestination

__all__ = ["OrthancDestination"]
