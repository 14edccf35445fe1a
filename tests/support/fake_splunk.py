"""A protocol-faithful fake Splunk: HTTP Event Collector plus the search-job REST API subset.

HEC (``/services/collector/event``, ``/services/collector``, ``/services/collector/ack``,
``/services/collector/health``) answers with the JSON bodies and HTTP statuses that Splunk documents
("Troubleshoot HTTP Event Collector", HEC status codes):

====  ====================================  ======
code  text                                  HTTP
====  ====================================  ======
0     Success                               200
1     Token disabled                        403
2     Token is required                     401
3     Invalid authorization                 401
4     Invalid token                         403
5     No data                               400
6     Invalid data format                   400
7     Incorrect index                       400
8     Internal server error                 500
9     Server is busy                        503
10    Data channel is missing               400
12    Event field is required               400
13    Event field cannot be blank           400
14    ACK is disabled                       400
====  ====================================  ======

Batches are concatenated JSON event objects (not an array); ``invalid-event-number`` names the first bad
event; the whole batch is refused when one event is bad, as Splunk does for parse errors.  With
``ack=True`` the reply carries ``ackId`` and ``X-Splunk-Request-Channel`` is required.

Management API on a second port, as used by ``splunklib``: ``POST /services/auth/login`` (XML
``sessionKey``), ``GET /services/server/info`` (Atom), ``POST /services/search[/v2]/jobs`` (XML ``sid``),
``GET /services/search[/v2]/jobs/{sid}`` (Atom entry with ``dispatchState``/``isDone``),
``GET|POST .../{sid}/results`` with ``output_mode=json`` and ``offset``/``count`` paging.  Every management
reply carries ``Connection: close``, which splunklib needs to read the body.

Search language subset: ``search`` then terms ``field=value`` / ``field!=value`` (``*`` wildcards, quoted
values, dotted JSON paths as Splunk's automatic JSON extraction names them), bare words matched in
``_raw``, ``NOT``, ``OR``, implicit AND, ``index=``/``sourcetype=``; then pipes ``| head N``, ``| table F1 F2``,
``| search TERMS`` (filters further) and ``| spath FIELD`` (a no-op here: every JSON field is already
extracted, as Splunk's automatic extraction does for ``_json``); other commands are refused with a search
error.  Not implemented: time ranges, stats, eval, the raw endpoint, TRUNCATE.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from tests.support._httpfake import FakeHTTPServer, Reply, Request

HEC_CODES: dict[int, tuple[str, int]] = {
    0: ("Success", 200), 1: ("Token disabled", 403), 2: ("Token is required", 401),
    3: ("Invalid authorization", 401), 4: ("Invalid token", 403), 5: ("No data", 400),
    6: ("Invalid data format", 400), 7: ("Incorrect index", 400), 8: ("Internal server error", 500),
    9: ("Server is busy", 503), 10: ("Data channel is missing", 400), 11: ("Invalid data channel", 400),
    12: ("Event field is required", 400), 13: ("Event field cannot be blank", 400),
    14: ("ACK is disabled", 400),
}

_ATOM_NS = ('xmlns="http://www.w3.org/2005/Atom" xmlns:s="http://dev.splunk.com/ns/rest" '
            'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"')


def _hec(code: int, **extra: Any) -> Reply:
    text, status = HEC_CODES[code]
    return Reply(status, {"text": text, "code": code, **extra})


def _flatten(prefix: str, value: Any, out: dict[str, list[str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        for v in value:
            _flatten(prefix + "{}" if prefix and isinstance(v, (dict, list)) else prefix, v, out)
    elif value is not None:
        out.setdefault(prefix, []).append(str(value).lower() if isinstance(value, bool) else str(value))


def _dict_xml(d: dict[str, Any]) -> str:
    keys = "".join(f'<s:key name="{escape(k)}">{escape(str(v))}</s:key>' for k, v in d.items())
    return f"<s:dict>{keys}</s:dict>"


class FakeSplunk:
    """HEC on one port and the management API on another, both on 127.0.0.1.

    Parameters
    ----------
    token
        The valid HEC token; ``disabled_tokens`` answer code 1.
    indexes
        Indexes that exist (the HEC token may write to them); others answer code 7.
    ack
        Indexer acknowledgement enabled on the token.
    """

    def __init__(self, *, token: str = "hec-token", indexes: tuple[str, ...] = ("main", "dicom"),
                 username: str = "admin", password: str = "changeme", ack: bool = False,
                 version: str = "9.1.2") -> None:
        self.token = token
        self.disabled_tokens: set[str] = set()
        self.indexes = set(indexes)
        self.username, self.password = username, password
        self.ack = ack
        self.version = version
        self.lock = threading.RLock()
        self.events: list[dict[str, Any]] = []
        self.batches = 0
        self._busy = 0
        self._pending_acks: dict[str, dict[int, bool]] = {}
        self._next_ack: dict[str, int] = {}
        self.sessions: set[str] = set()
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.hec = _Part(self._handle_hec)
        self.mgmt = _Part(self._handle_mgmt, close_connection=True)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeSplunk:
        self.hec.start()
        self.mgmt.start()
        return self

    def stop(self) -> None:
        self.hec.stop()
        self.mgmt.stop()

    @property
    def hec_url(self) -> str:
        return self.hec.url

    @property
    def mgmt_url(self) -> str:
        return self.mgmt.url

    def busy_next(self, count: int) -> None:
        """Answer the next ``count`` HEC posts with code 9 "Server is busy" (HTTP 503)."""
        with self.lock:
            self._busy += count

    def make_acks_pending(self, channel: str) -> None:
        """Leave every acknowledgement of ``channel`` false until :meth:`index_pending` (tests)."""
        with self.lock:
            self._pending_acks.setdefault(channel, {})
            self._hold = True

    _hold = False

    def index_pending(self) -> None:
        with self.lock:
            for acks in self._pending_acks.values():
                for k in acks:
                    acks[k] = True
            self._hold = False

    # -- HEC -------------------------------------------------------------------------------------
    def _handle_hec(self, req: Request) -> Reply:
        path = req.path.rstrip("/")
        if path == "/services/collector/health":
            return _hec(0) if not self._busy else Reply(503, {"text": "HEC is unhealthy, queues are full",
                                                              "code": 18})
        auth = req.headers.get("authorization", "")
        if not auth:
            return _hec(2)
        scheme, _, token = auth.partition(" ")
        if scheme != "Splunk":
            return _hec(3)
        if token in self.disabled_tokens:
            return _hec(1)
        if token != self.token:
            return _hec(4)
        channel = req.headers.get("x-splunk-request-channel") or req.query.get("channel")
        if path == "/services/collector/ack":
            if not self.ack:
                return _hec(14)
            if not channel:
                return _hec(10)
            ids = json.loads(req.body or b"{}").get("acks", [])
            with self.lock:
                acks = self._pending_acks.get(channel, {})
                return Reply(200, {"acks": {str(i): bool(acks.get(int(i), False)) for i in ids}})
        if path not in ("/services/collector/event", "/services/collector"):
            return Reply(404, {"text": "The requested URL was not found on this server.", "code": 404})
        with self.lock:
            if self._busy:
                self._busy -= 1
                return _hec(9)
        if self.ack and not channel:
            return _hec(10)
        text = req.body.decode("utf-8", "replace")
        if not text.strip():
            return _hec(5)
        decoder = json.JSONDecoder()
        pos, number, parsed = 0, 0, []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                return _hec(6, **{"invalid-event-number": number})
            if not isinstance(obj, dict):
                return _hec(6, **{"invalid-event-number": number})
            if "event" not in obj:
                return _hec(12, **{"invalid-event-number": number})
            if obj["event"] in ("", None, {}):
                return _hec(13, **{"invalid-event-number": number})
            index = obj.get("index", "main")
            if index not in self.indexes:
                return _hec(7, **{"invalid-event-number": number})
            parsed.append(obj)
            number += 1
        with self.lock:
            self.batches += 1
            self.events.extend(parsed)
            if self.ack and channel:
                ack_id = self._next_ack.get(channel, 0)
                self._next_ack[channel] = ack_id + 1
                self._pending_acks.setdefault(channel, {})[ack_id] = not self._hold
                return _hec(0, ackId=ack_id)
        return _hec(0)

    # -- management / search ---------------------------------------------------------------------
    def _form(self, req: Request) -> dict[str, str]:
        form = dict(req.query)
        if req.body and "x-www-form-urlencoded" in req.headers.get("content-type", "x-www-form-urlencoded"):
            form.update({k: v[-1] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()})
        return form

    def _handle_mgmt(self, req: Request) -> Reply:
        xml = "text/xml; charset=utf-8"
        form = self._form(req)
        path = req.path.rstrip("/")
        if path == "/services/auth/login" and req.method == "POST":
            if form.get("username") != self.username or form.get("password") != self.password:
                return Reply(401, b'<?xml version="1.0" encoding="UTF-8"?>\n<response><messages><msg type="WARN" '
                             b'code="incorrect_username_or_password">Login failed</msg></messages></response>',
                             content_type=xml)
            key = uuid.uuid4().hex
            with self.lock:
                self.sessions.add(key)
            return Reply(200, f"<response>\n  <sessionKey>{key}</sessionKey>\n</response>".encode(),
                         content_type=xml)
        auth = req.headers.get("authorization", "")
        if not (auth.startswith("Splunk ") and auth[7:] in self.sessions):
            return Reply(401, b'<?xml version="1.0" encoding="UTF-8"?>\n<response><messages><msg type="WARN">'
                         b'call not properly authenticated</msg></messages></response>', content_type=xml)
        if path == "/services/server/info":
            entry = (f"<entry><title>server-info</title><id>{self.mgmt_url}/services/server/info/server-info</id>"
                     f'<link href="/services/server/info/server-info" rel="alternate"/>'
                     f'<content type="text/xml">{_dict_xml({"version": self.version, "serverName": "fake", "instance_type": "download"})}'
                     f"</content></entry>")
            return Reply(200, f'<?xml version="1.0" encoding="UTF-8"?>\n<feed {_ATOM_NS}><title>server-info</title>'
                         f"{entry}</feed>".encode(), content_type=xml)
        m = re.fullmatch(r"/services(?:NS/[^/]+/[^/]+)?/search(?:/v2)?/jobs(?:/([^/]+))?(?:/(results|control))?",
                         path)
        if not m:
            return Reply(404, b"<response><messages><msg type=\"ERROR\">Not Found</msg></messages></response>",
                         content_type=xml)
        sid, sub = m.group(1), m.group(2)
        if sid is None and req.method == "POST":
            try:
                results = self._run(form.get("search", ""))
            except ValueError as exc:
                return Reply(400, f'<response><messages><msg type="FATAL">{escape(str(exc))}</msg></messages>'
                             f"</response>".encode(), content_type=xml)
            new_sid = f"fake.{uuid.uuid4().hex[:12]}"
            with self.lock:
                self.jobs[new_sid] = results
            if form.get("output_mode") == "json":
                return Reply(201, {"sid": new_sid})
            return Reply(201, f"<?xml version='1.0' encoding='UTF-8'?>\n<response>\n  <sid>{new_sid}</sid>\n"
                         f"</response>".encode(), content_type=xml)
        if sid is None or sid not in self.jobs:
            return Reply(404, b'<response><messages><msg type="FATAL">Unknown sid.</msg></messages></response>',
                         content_type=xml)
        results = self.jobs[sid]
        if sub is None:
            content = {"sid": sid, "dispatchState": "DONE", "isDone": "1", "isFailed": "0",
                       "resultCount": len(results), "eventCount": len(results)}
            entry = (f'<?xml version="1.0" encoding="UTF-8"?>\n<entry {_ATOM_NS}><title>search</title>'
                     f"<id>{self.mgmt_url}/services/search/jobs/{sid}</id>"
                     f'<link href="/services/search/jobs/{sid}" rel="alternate"/>'
                     f'<content type="text/xml">{_dict_xml(content)}</content></entry>')
            return Reply(200, entry.encode(), content_type=xml)
        if sub == "control":
            return Reply(200, b"<response><messages><msg type=\"INFO\">ok</msg></messages></response>",
                         content_type=xml)
        if form.get("output_mode") != "json":
            return Reply(400, b"<response><messages><msg type=\"ERROR\">fake: only output_mode=json"
                         b"</msg></messages></response>", content_type=xml)
        offset = int(form.get("offset", 0))
        count = int(form.get("count", 100))
        page = results[offset:] if count == 0 else results[offset: offset + count]
        return Reply(200, {"preview": False, "init_offset": offset, "messages": [],
                           "fields": [{"name": k} for k in sorted({k for r in page for k in r})],
                           "results": page, "highlighted": {}})

    def _run(self, search: str) -> list[dict[str, Any]]:
        stages = [s.strip() for s in search.split("|")]
        head: int | None = None
        table: list[str] | None = None
        filters = []
        for stage in stages[1:]:
            parts = stage.replace(",", " ").split()
            if len(parts) == 2 and parts[0] == "head" and parts[1].isdigit():
                head = int(parts[1])
            elif len(parts) >= 2 and parts[0] == "table":
                table = parts[1:]
            elif len(parts) == 2 and parts[0] == "spath":
                continue
            elif parts and parts[0] == "search":
                filters.append(self._compile(shlex.split(stage, posix=True)[1:]))
            else:
                raise ValueError(f"Unknown search command '{parts[0] if parts else ''}'. "
                                 "(fake: only head, table, search, spath)")
        tokens = shlex.split(stages[0], posix=True)
        if tokens and tokens[0] == "search":
            tokens = tokens[1:]
        first = self._compile(tokens)

        def match(fields: dict[str, list[str]], raw: str) -> bool:
            return first(fields, raw) and all(f(fields, raw) for f in filters)
        out = []
        with self.lock:
            events = list(self.events)
        for ev in events:
            body = ev["event"]
            raw = json.dumps(body, separators=(",", ":")) if not isinstance(body, str) else body
            fields: dict[str, list[str]] = {}
            if isinstance(body, dict):
                _flatten("", body, fields)
            meta = {"index": ev.get("index", "main"), "sourcetype": ev.get("sourcetype", "httpevent"),
                    "source": ev.get("source", "http:fake"), "host": ev.get("host", "fake")}
            for k, v in meta.items():
                fields[k] = [str(v)]
            if match(fields, raw):
                row: dict[str, Any] = {k: (v[0] if len(v) == 1 else v) for k, v in fields.items() if "." not in k}
                row.update(_raw=raw, _time=str(ev.get("time", "")))
                out.append(row)
        out.reverse()  # Splunk returns newest first
        out = out[:head] if head is not None else out
        if table is not None:  # only the listed fields, no _raw (absent fields are left out)
            out = [{k: r[k] for k in table if k in r} for r in out]
        return out

    @staticmethod
    def _term(tok: str) -> Callable[[dict[str, list[str]], str], bool]:
        m = re.fullmatch(r"([^=!]+)(!=|=)(.*)", tok)
        if m:
            field, op, value = m.groups()

            def field_term(f: dict[str, list[str]], raw: str) -> bool:
                hit = any(fnmatch.fnmatchcase(v.lower(), value.lower()) for v in f.get(field, []))
                return hit if op == "=" else (field in f and not hit)

            return field_term
        word = tok.lower()

        def word_term(f: dict[str, list[str]], raw: str) -> bool:
            return fnmatch.fnmatchcase(raw.lower(), f"*{word}*")

        return word_term

    @staticmethod
    def _negate(t: Callable[[dict[str, list[str]], str], bool]) -> Callable[[dict[str, list[str]], str], bool]:
        return lambda f, raw: not t(f, raw)

    @classmethod
    def _compile(cls, tokens: list[str]) -> Callable[[dict[str, list[str]], str], bool]:
        """SPL precedence: OR binds tighter than the implicit AND (``a b OR c`` is ``a AND (b OR c)``)."""
        groups: list[list[Callable[[dict[str, list[str]], str], bool]]] = []
        negate = join_or = False
        for tok in tokens:
            if tok == "OR":
                join_or = True
                continue
            if tok == "AND":
                continue
            if tok == "NOT":
                negate = True
                continue
            term = cls._term(tok)
            if negate:
                term = cls._negate(term)
                negate = False
            if join_or and groups:
                groups[-1].append(term)
            else:
                groups.append([term])
            join_or = False
        return lambda f, raw: all(any(t(f, raw) for t in group) for group in groups)


class _Part(FakeHTTPServer):
    def __init__(self, handler: Callable[[Request], Reply], *, close_connection: bool = False) -> None:
        super().__init__()
        self._handler = handler
        self.close_connection = close_connection

    def handle(self, request: Request) -> Reply:
        return self._handler(request)
