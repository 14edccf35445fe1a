"""Splunk index sink: writes through the HTTP Event Collector, reads through splunklib search jobs."""

from copydicom.sinks.splunk._config import SplunkConfig
from copydicom.sinks.splunk._hec import hec_error
from copydicom.sinks.splunk._sink import SplunkIndex

__all__ = ["SplunkConfig", "SplunkIndex", "hec_error"]
