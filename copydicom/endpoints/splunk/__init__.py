"""Splunk index: HEC writes, SPL search queries: an index (documents of tags and dose) and the query side of conditional replication.

The sink module loads inside the factory; the config module is light.
"""

from __future__ import annotations

from copydicom.model import IndexSink
from copydicom.registry import BuildContext, EndpointType
from copydicom.sinks.splunk._config import SplunkConfig


def _index(config: SplunkConfig, ctx: BuildContext) -> IndexSink:
    from copydicom.sinks.splunk._sink import SplunkIndex

    return SplunkIndex(config)


def probe(config: SplunkConfig) -> None:
    """An empty HEC post with the token, no retries (``check-config``).

    Splunk checks the token before the body: 401/403 mean refused credentials; a 400
    ("No data", or "Data channel is missing" with acknowledgement on) means the token was
    accepted (Splunk HEC status codes 1-5 and 10).
    """
    import requests

    from copydicom.errors import IndexUnavailable, classify_http_status

    what = f"POST /services/collector/event on {config.name}"
    verify: bool | str = config.ca_certs if (config.verify and config.ca_certs) else config.verify
    try:
        reply = requests.post(
            f"{config.hec_url}/services/collector/event", data=b"",
            headers={"Authorization": f"Splunk {config.hec_token}"}, timeout=min(config.timeout, 5.0), verify=verify,
        )
    except requests.RequestException as exc:
        raise IndexUnavailable(f"{what}: {type(exc).__name__}") from None
    if reply.status_code == 400:
        return
    error = classify_http_status(reply.status_code, what=what, retryable=IndexUnavailable, body=reply.text)
    if error is not None:
        raise error


ENDPOINT: EndpointType[SplunkConfig] = EndpointType(
    name="splunk",
    description="Splunk index: HEC writes, SPL search queries",
    schemes=("splunk+http", "splunk+https",),
    config=SplunkConfig,
    index=_index,
    extra="splunk",
    requires=("splunklib",),
    probe=probe,
)
