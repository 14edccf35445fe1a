"""A small HTTP proxy that adds a fixed latency to every request before forwarding it (a distant PACS).

Used by ``benchmarks/cluster_bench.py`` so that scaling is measured against a destination whose
latency, not this machine's two cores, is the limit. Threaded (one thread per connection, HTTP/1.1
keep-alive), forwards method, path, headers and body to one upstream with ``requests``; loopback only.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-authenticate", "content-length", "host"}


class DelayProxy:
    """``http://127.0.0.1:{port}`` -> ``upstream`` with ``delay`` seconds added to each request."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.requests = 0
        #: POSTs being forwarded now, and the most at once (a destination's max_concurrency, seen from outside).
        self.posts_in_flight = 0
        self.peak_posts = 0
        self._count = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                try:
                    self._relay()
                except OSError:  # the client went away (a worker SIGKILLed mid-request): nothing to answer
                    self.close_connection = True

            def _upstream(self, body: bytes | None) -> requests.Response:
                """Forward after the delay; a POST counts as in flight from its arrival to the upstream's
                answer (before that answer is written back, so the client cannot start the next one first)."""
                post = self.command == "POST"
                if post:
                    with proxy._count:
                        proxy.posts_in_flight += 1
                        proxy.peak_posts = max(proxy.peak_posts, proxy.posts_in_flight)
                try:
                    time.sleep(proxy.delay)
                    proxy.requests += 1
                    session = getattr(proxy._local, "session", None)
                    if session is None:
                        session = proxy._local.session = requests.Session()
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    return session.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                           timeout=120, allow_redirects=False)
                finally:
                    if post:
                        with proxy._count:
                            proxy.posts_in_flight -= 1

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                reply = self._upstream(body)
                content = reply.content
                self.send_response(reply.status_code)
                for k, v in reply.headers.items():
                    if k.lower() not in _HOP and k.lower() != "content-encoding":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="delay-proxy", daemon=True)

    def start(self) -> DelayProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
