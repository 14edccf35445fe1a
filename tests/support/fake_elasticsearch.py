"""A protocol-faithful fake Elasticsearch (8.x/9.x REST subset) for tests and benchmarks.

Implemented, as the real server answers them:

- ``GET /`` and ``HEAD /`` (cluster info), with ``X-Elastic-Product: Elasticsearch`` on every reply;
- ``PUT/GET /_index_template/{name}``, ``PUT /{index}``, ``HEAD /{index}``, ``POST /{index}/_refresh``;
- ``POST /_bulk`` and ``/{index}/_bulk``: NDJSON ``index``/``create``/``delete`` actions, per-item results
  (201 created, 200 updated, 409 version conflict for ``create``), ``errors: true`` on partial failure;
- ``GET/POST /{index}/_search`` and ``_count``: ``match_all``, ``term``, ``terms``, ``match``, ``range``,
  ``exists``, ``bool`` (must/filter/should/must_not) and a ``query_string`` subset (``field:value``,
  quoted phrases, ``*`` wildcards, AND/OR/NOT, parentheses, free text over top-level fields);
  ``q=`` URL parameter; ``from``/``size``; ``sort`` on fields; ``search_after``.
- Vendor media types: the reply's ``Content-Type`` is ``application/vnd.elasticsearch+json;
  compatible-with=N`` when the request asked for it; a ``compatible-with`` above the server's major
  version (a 9.x client against an 8.x server) is refused with ``media_type_header_exception``, as
  the real server does.

Not implemented: scoring (``_score`` is 1.0), aggregations, scroll/PIT, mappings enforcement other than
rejecting documents listed in :attr:`FakeElasticsearch.item_faults`, shards, versions beyond a counter.

Faults: :meth:`fail_next` answers the next N requests with 429/503; :attr:`item_faults` makes bulk
items fail by ``_id`` (one-shot or persistent).
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Callable
from typing import Any

from tests.support._httpfake import FakeHTTPServer, Reply, Request

_ERROR_TYPES = {
    400: "mapper_parsing_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}


def _get(source: dict[str, Any], path: str) -> Any:
    cur: Any = source
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, dict) and path in cur:  # dotted key stored flat
            return cur[path]
        else:
            return None
    return cur


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


_TOKEN = re.compile(r'\s*(\(|\)|"[^"]*"|[^\s()"]+:"[^"]*"|[^\s()]+)')


class _QueryString:
    """Tiny Lucene ``query_string`` evaluator (default operator OR, like Elasticsearch)."""

    def __init__(self, text: str, default_operator: str = "OR") -> None:
        self.tokens = [t for t in _TOKEN.findall(text) if t.strip()]
        self.pos = 0
        self.default_and = default_operator.upper() == "AND"

    def parse(self) -> Callable[[dict[str, Any]], bool]:
        expr = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"cannot parse query near {self.tokens[self.pos]!r}")
        return expr

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Callable[[dict[str, Any]], bool]:
        terms = [self._and()]
        while self._peek() not in (None, ")"):
            if self._peek() in ("OR", "||"):
                self.pos += 1
            elif self.default_and:
                terms.append(self._both(terms.pop(), self._and()))
                continue
            terms.append(self._and())
        return lambda d: any(t(d) for t in terms)

    @staticmethod
    def _both(a: Callable[[dict[str, Any]], bool], b: Callable[[dict[str, Any]], bool]
              ) -> Callable[[dict[str, Any]], bool]:
        return lambda d: a(d) and b(d)

    def _and(self) -> Callable[[dict[str, Any]], bool]:
        terms = [self._not()]
        while self._peek() in ("AND", "&&"):
            self.pos += 1
            terms.append(self._not())
        return lambda d: all(t(d) for t in terms)

    def _not(self) -> Callable[[dict[str, Any]], bool]:
        if self._peek() in ("NOT", "!"):
            self.pos += 1
            inner = self._not()
            return lambda d: not inner(d)
        return self._atom()

    def _atom(self) -> Callable[[dict[str, Any]], bool]:
        tok = self._peek()
        if tok is None:
            raise ValueError("unexpected end of query")
        self.pos += 1
        if tok == "(":
            inner = self._or()
            if self._peek() != ")":
                raise ValueError("missing )")
            self.pos += 1
            return inner
        field, sep, value = tok.partition(":")
        if not sep or tok.startswith('"'):
            field, value = "", tok
        value = value.strip('"')
        if value == "*" and field:
            return lambda d: _get(d, field) is not None

        def match(candidate: Any) -> bool:
            if candidate is None or isinstance(candidate, (dict, list)):
                return False
            text = str(candidate)
            if "*" in value or "?" in value:
                return fnmatch.fnmatchcase(text.lower(), value.lower())
            return text.lower() == value.lower() or value.lower() in text.lower().split()

        if field:
            return lambda d: any(match(v) for v in _values(_get(d, field)))
        return lambda d: any(match(v) for v in d.values() if not isinstance(v, dict))


def _compile(query: dict[str, Any] | None) -> Callable[[dict[str, Any]], bool]:
    if not query:
        return lambda d: True
    if len(query) != 1:
        raise ValueError("a query clause has exactly one key")
    (kind, spec), = query.items()
    if kind == "match_all":
        return lambda d: True
    if kind == "term" or kind == "match" or kind == "match_phrase":
        (field, val), = spec.items()
        if isinstance(val, dict):
            val = val.get("value", val.get("query"))
        return lambda d: any(_eq(v, val) for v in _values(_get(d, field)))
    if kind == "terms":
        (field, vals), = spec.items()
        return lambda d: any(_eq(v, x) for v in _values(_get(d, field)) for x in vals)
    if kind == "exists":
        return lambda d: _get(d, spec["field"]) is not None
    if kind == "range":
        (field, bounds), = spec.items()

        def in_range(d: dict[str, Any]) -> bool:
            v = _get(d, field)
            if v is None:
                return False
            for op, bound in bounds.items():
                a, b = (float(v), float(bound)) if isinstance(v, (int, float)) else (str(v), str(bound))
                if op == "gte" and not a >= b or op == "gt" and not a > b:  # type: ignore[operator]
                    return False
                if op == "lte" and not a <= b or op == "lt" and not a < b:  # type: ignore[operator]
                    return False
            return True

        return in_range
    if kind == "bool":
        must = [_compile(q) for key in ("must", "filter") for q in _values(spec.get(key, []))]
        should = [_compile(q) for q in _values(spec.get("should", []))]
        must_not = [_compile(q) for q in _values(spec.get("must_not", []))]
        return lambda d: (all(m(d) for m in must) and not any(n(d) for n in must_not)
                          and (not should or any(s(d) for s in should)))
    if kind == "query_string":
        return _QueryString(spec["query"], spec.get("default_operator", "OR")).parse()
    raise ValueError(f"query type [{kind}] is not supported by the fake")


class FakeElasticsearch(FakeHTTPServer):
    """In-memory Elasticsearch speaking the REST subset listed in the module docstring."""

    def __init__(self, version: str = "9.0.0", *, api_key: str | None = None,
                 basic: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.version = version
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.api_key = api_key
        self.basic = basic
        self._fail: list[int] = []
        #: ``{_id: status}`` or ``{_id: (status, times)}``: bulk items with that id fail.
        self.item_faults: dict[str, Any] = {}
        self.bulk_requests = 0
        self.media_types: list[str] = []

    # -- fault injection ---------------------------------------------------------------------------
    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status`` (429 or 503) before doing anything."""
        with self.lock:
            self._fail.extend([status] * count)

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.indices.get(index, {}))

    # -- protocol ----------------------------------------------------------------------------------
    def _reply(self, request: Request, status: int, body: Any) -> Reply:
        accept = request.headers.get("accept", "")
        m = re.search(r"compatible-with=(\d+)", accept)
        ctype = f"application/vnd.elasticsearch+json;compatible-with={m.group(1)}" if m else "application/json"
        return Reply(status, body, content_type=ctype, headers={"X-Elastic-Product": "Elasticsearch"})

    def _error(self, request: Request, status: int, etype: str, reason: str) -> Reply:
        return self._reply(request, status, {"error": {"root_cause": [{"type": etype, "reason": reason}],
                                                       "type": etype, "reason": reason}, "status": status})

    def _authorized(self, request: Request) -> bool:
        if self.api_key is None and self.basic is None:
            return True
        auth = request.headers.get("authorization", "")
        if self.api_key is not None and auth == f"ApiKey {self.api_key}":
            return True
        if self.basic is not None:
            import base64

            expected = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            return auth == f"Basic {expected}"
        return False

    def handle(self, request: Request) -> Reply:
        with self.lock:
            self.media_types.append(request.headers.get("content-type", ""))
            if self._fail:
                status = self._fail.pop(0)
                etype = _ERROR_TYPES.get(status, "exception")
                return self._error(request, status, etype, f"injected fault {status}")
        requested = {int(v) for h in ("accept", "content-type")
                     for v in re.findall(r"compatible-with=(\d+)", request.headers.get(h, ""))}
        major = int(self.version.split(".")[0])
        if requested and (len(requested) > 1 or not major - 1 <= requested.pop() <= major):
            # what a server answers a client of another major version (REST API compatibility)
            return self._error(request, 400, "media_type_header_exception",
                               "Invalid media-type value on headers [Accept, Content-Type]")
        if not self._authorized(request):
            return Reply(401, {"error": {"type": "security_exception", "reason": "unable to authenticate"},
                               "status": 401}, headers={"WWW-Authenticate": 'Basic realm="security"'})
        parts = [p for p in request.path.split("/") if p]
        body: Any = None
        if request.body and not request.path.endswith("_bulk"):
            body = json.loads(request.body)
        if not parts:
            return self._reply(request, 200, {
                "name": "fake-node", "cluster_name": "copydicom-fake", "cluster_uuid": "fake",
                "version": {"number": self.version, "build_flavor": "default",
                            "minimum_wire_compatibility_version": "7.17.0"},
                "tagline": "You Know, for Search"})
        if parts[0] == "_index_template" and len(parts) == 2:
            if request.method == "PUT":
                with self.lock:
                    self.templates[parts[1]] = body or {}
                return self._reply(request, 200, {"acknowledged": True})
            if parts[1] in self.templates:
                return self._reply(request, 200, {"index_templates": [
                    {"name": parts[1], "index_template": self.templates[parts[1]]}]})
            return self._error(request, 404, "resource_not_found_exception", f"index template [{parts[1]}] missing")
        if parts[-1] == "_bulk":
            return self._bulk(request, parts[0] if len(parts) == 2 else None)
        index = parts[0]
        if len(parts) == 1:
            if request.method == "PUT":
                with self.lock:
                    if index in self.indices:
                        return self._error(request, 400, "resource_already_exists_exception",
                                           f"index [{index}] already exists")
                    self.indices[index] = {}
                return self._reply(request, 200, {"acknowledged": True, "shards_acknowledged": True,
                                                  "index": index})
            if request.method == "HEAD":
                return self._reply(request, 200 if index in self.indices else 404, b"")
        if parts[1:] == ["_refresh"]:
            return self._reply(request, 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}})
        if parts[1:] in (["_search"], ["_count"]):
            return self._search(request, index, body or {}, count_only=parts[1] == "_count")
        if len(parts) == 3 and parts[1] == "_doc" and request.method == "GET":
            doc = self.indices.get(index, {}).get(parts[2])
            if doc is None:
                return self._reply(request, 404, {"_index": index, "_id": parts[2], "found": False})
            return self._reply(request, 200, {"_index": index, "_id": parts[2], "found": True, "_source": doc})
        return self._error(request, 400, "illegal_argument_exception", f"fake: unsupported {request.method} "
                           f"{request.path}")

    def _bulk(self, request: Request, default_index: str | None) -> Reply:
        started = time.monotonic()
        lines = [ln for ln in request.body.split(b"\n") if ln.strip()]
        items: list[dict[str, Any]] = []
        errors = False
        i = 0
        with self.lock:
            self.bulk_requests += 1
            while i < len(lines):
                action_line = json.loads(lines[i])
                (op, meta), = action_line.items()
                i += 1
                source = None
                if op in ("index", "create", "update"):
                    if i >= len(lines):
                        return self._error(request, 400, "illegal_argument_exception",
                                           "The bulk request must be terminated by a newline [\\n]")
                    source = json.loads(lines[i])
                    i += 1
                index = meta.get("_index", default_index)
                doc_id = meta.get("_id")
                result: dict[str, Any] = {"_index": index, "_id": doc_id}
                fault = self.item_faults.get(doc_id) if doc_id is not None else None
                if fault is not None:
                    status, times = (fault, None) if isinstance(fault, int) else fault
                    if times is not None:
                        if times <= 1:
                            del self.item_faults[doc_id]
                        else:
                            self.item_faults[doc_id] = (status, times - 1)
                    etype = _ERROR_TYPES.get(status, "exception")
                    result.update(status=status, error={"type": etype, "reason": f"injected item fault {status}"})
                    items.append({op: result})
                    errors = True
                    continue
                if op == "update":
                    result.update(status=400, error={"type": "action_request_validation_exception",
                                                     "reason": "fake: update is not implemented"})
                    errors = True
                    items.append({op: result})
                    continue
                store = self.indices.setdefault(index, {})
                if doc_id is None and op != "delete":
                    doc_id = f"auto-{len(store)}-{self.bulk_requests}"
                    result["_id"] = doc_id
                key = (index, doc_id)
                if op == "delete":
                    existed = store.pop(doc_id, None) is not None
                    result.update(status=200 if existed else 404, result="deleted" if existed else "not_found")
                elif op == "create" and doc_id in store:
                    result.update(status=409, error={"type": "version_conflict_engine_exception",
                                                     "reason": f"[{doc_id}]: version conflict, document already exists"})
                    errors = True
                else:
                    existed = doc_id in store
                    store[doc_id] = source or {}
                    result.update(status=200 if existed else 201, result="updated" if existed else "created")
                self.versions[key] = self.versions.get(key, 0) + 1
                result.update(_version=self.versions[key], _seq_no=self.versions[key] - 1, _primary_term=1,
                              _shards={"total": 1, "successful": 1, "failed": 0})
                items.append({op: result})
        return self._reply(request, 200, {"took": int((time.monotonic() - started) * 1000), "errors": errors,
                                          "items": items})

    def _search(self, request: Request, index: str, body: dict[str, Any], *, count_only: bool) -> Reply:
        names = [n for n in self.indices if fnmatch.fnmatchcase(n, index)] if "*" in index else [index]
        if not any(n in self.indices for n in names):
            return self._error(request, 404, "index_not_found_exception", f"no such index [{index}]")
        try:
            if "q" in request.query:
                match = _QueryString(request.query["q"], request.query.get("default_operator", "OR")).parse()
            else:
                match = _compile(body.get("query"))
        except (ValueError, KeyError, TypeError) as exc:
            return self._error(request, 400, "parsing_exception", str(exc))
        with self.lock:
            hits = [(n, i, d) for n in names for i, d in self.indices.get(n, {}).items() if match(d)]
        if count_only:
            return self._reply(request, 200, {"count": len(hits), "_shards": {"total": 1, "successful": 1,
                                                                              "skipped": 0, "failed": 0}})
        sort = body.get("sort") or []
        keys: list[tuple[str, str]] = []
        for s in _values(sort):
            if isinstance(s, str):
                keys.append((s, "asc"))
            else:
                (f, o), = s.items()
                keys.append((f, o if isinstance(o, str) else o.get("order", "asc")))

        def sort_values(hit: tuple[str, str, dict[str, Any]]) -> list[Any]:
            return [hit[1] if f == "_id" else _get(hit[2], f) for f, _ in keys]

        for pos in range(len(keys) - 1, -1, -1):
            hits.sort(key=lambda h: (sort_values(h)[pos] is None, str(sort_values(h)[pos])),
                      reverse=keys[pos][1] == "desc")
        after = body.get("search_after")
        if after is not None:
            if not keys:
                return self._error(request, 400, "illegal_argument_exception",
                                   "Sort must contain at least one field.")
            hits = [h for h in hits if self._after(sort_values(h), after, keys)]
        start = int(body.get("from", request.query.get("from", 0)))
        size = int(body.get("size", request.query.get("size", 10)))
        if start + size > 10000:
            return self._error(request, 400, "illegal_argument_exception",
                               "Result window is too large, from + size must be less than or equal to: [10000]")
        total = len(hits)
        page = hits[start: start + size]
        out = []
        for n, i, d in page:
            hit: dict[str, Any] = {"_index": n, "_id": i, "_score": None if keys else 1.0, "_source": d}
            if keys:
                hit["sort"] = sort_values((n, i, d))
            out.append(hit)
        return self._reply(request, 200, {"took": 1, "timed_out": False,
                                          "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                                          "hits": {"total": {"value": total, "relation": "eq"},
                                                   "max_score": None if keys else 1.0, "hits": out}})

    @staticmethod
    def _after(values: list[Any], after: list[Any], keys: list[tuple[str, str]]) -> bool:
        for v, a, (_, order) in zip(values, after, keys):
            sv, sa = str(v), str(a)
            if sv != sa:
                return sv > sa if order == "asc" else sv < sa
        return False
