"""A scripted HTTP server on 127.0.0.1 for client tests over real sockets.

``responses`` only intercepts ``requests``; the Orthanc client's data plane
(file bodies) uses :mod:`http.client`, so its tests talk to this server.
Replies are queued per ``(method, path)``; every request is recorded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Scripted:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Announce this Content-Length but send ``body`` and close (a cut-short reply).
    claim_length: int | None = None


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], list[Scripted]] = {}
        self.requests: list[Recorded] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
                queue = outer.replies.get((self.command, self.path), [])
                reply = queue.pop(0) if queue else Scripted(404, b"not scripted")
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(reply.claim_length or len(reply.body)))
                if reply.claim_length is not None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = _serve
            do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def script(self, method: str, path: str, *replies: Scripted) -> None:
        self.replies.setdefault((method, path), []).extend(replies)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
