"""A small HTTP server for ``/metrics`` and ``/healthz`` (loopback by default), with bounded resources.

Why not :class:`http.server.ThreadingHTTPServer` (the first version): it starts
one thread per connection and waits on it without a deadline, so 400 half-open
connections made 404 threads, a TLS ClientHello (no newline) held a thread until
the client went away, and a client that dropped its connection made
:mod:`socketserver` print multi-line "Exception occurred during processing of
request" blocks to stderr, breaking ``--log-json``.  Here:

- one thread runs an :mod:`asyncio` loop that reads every request with a
  deadline (:data:`REQUEST_TIMEOUT` for the request line and headers): a
  connection that sends nothing, or sends a TLS handshake, costs a socket, not
  a thread, and is closed when its time is up;
- the answers (metrics rendering, health checks that may probe a server) run on
  a pool of :data:`WORKERS` threads, so a slow probe cannot pile threads up;
- at most :data:`MAX_CONNECTIONS` connections wait for their request at once;
  a new one closes the oldest waiting one, so a flood of idle connections
  cannot lock out the health check;
- nothing is printed: client errors are logged at DEBUG through logging.

:meth:`ObservabilityServer.stop` closes the socket and ends the thread (daemon shutdown).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from copydicom.observability._health import HealthChecker
from copydicom.observability._metrics import Metrics

log = logging.getLogger(__name__)

#: Seconds a client has to send its request line and headers.
REQUEST_TIMEOUT = 5.0
#: Threads that build answers (metrics text, health checks).
WORKERS = 4
#: Connections waiting for their request at once; a new one closes the oldest.
MAX_CONNECTIONS = 64
#: Longest request line or header line read (like http.server's 65536).
MAX_LINE = 8192
#: Most header lines read before the request is refused.
MAX_HEADERS = 100

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class ObservabilityServer:
    """Serve ``GET /metrics`` (Prometheus text format) and ``GET /healthz`` (JSON, 200 or 503).

    The socket is bound in the constructor (a taken port fails before the daemon starts anything).
    """

    def __init__(self, metrics: Metrics, health: HealthChecker, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
            self._sock.bind((host, port))
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="copydicom-http")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closed: asyncio.Event | None = None
        #: Connections still reading their request, oldest first (only touched on the loop's thread).
        self._reading: dict[asyncio.StreamWriter, None] = {}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    # -- answers (worker threads) -----------------------------------------------------------------

    def answer(self, method: str, target: str) -> tuple[int, bytes, str]:
        """Status, body and content type for one request."""
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, b"only GET\n", "text/plain"
        if path == "/metrics":
            body, ctype = self.metrics.render()
            return 200, body, ctype
        if path == "/healthz":
            try:
                healthy, report = self.health.check()
            except Exception as exc:  # noqa: BLE001 - a broken check is an unhealthy answer
                healthy, report = False, {"status": "unhealthy", "error": type(exc).__name__}
            return (200 if healthy else 503), json.dumps(report, indent=1, sort_keys=True).encode(), "application/json"
        return 404, b"not found: try /metrics or /healthz\n", "text/plain"

    # -- the event loop -----------------------------------------------------------------------------

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        line = await reader.readline()
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ValueError("not an HTTP request line")
        for _ in range(MAX_HEADERS):
            header = await reader.readline()
            if header in (b"\r\n", b"\n"):
                return parts[0], parts[1]
            if not header:
                raise ValueError("connection closed in the headers")
        raise ValueError("too many header lines")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(self._reading) >= MAX_CONNECTIONS:
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.close()  # its reader sees the end of the stream and the handler ends
        self._reading[writer] = None
        try:
            try:
                method, target = await asyncio.wait_for(self._read_request(reader), REQUEST_TIMEOUT)
            except (asyncio.TimeoutError, ValueError, ConnectionError, asyncio.LimitOverrunError,
                    asyncio.IncompleteReadError) as exc:
                log.debug("metrics server: request refused (%s)", type(exc).__name__)
                if not isinstance(exc, (asyncio.TimeoutError, ConnectionError)) and not writer.is_closing():
                    await self._reply(writer, 400, b"bad request\n", "text/plain", head=False)
                return
            finally:
                self._reading.pop(writer, None)
            loop = asyncio.get_running_loop()
            status, body, ctype = await loop.run_in_executor(self._pool, self.answer, method, target)
            await self._reply(writer, status, body, ctype, head=method == "HEAD")
            log.debug("http %s %s %d", method, target.split("?", 1)[0][:100], status)
        except (ConnectionError, asyncio.TimeoutError, OSError) as exc:
            log.debug("metrics server: client went away (%s)", type(exc).__name__)
        except Exception:  # noqa: BLE001 - one line in the log, never a traceback on stderr
            log.warning("metrics server: internal error answering a request", exc_info=True)
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, *, head: bool) -> None:
        header = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nServer: copydicom\r\n"
                  f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        writer.write(header.encode("latin-1") + (b"" if head else body))
        await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)

    async def _serve(self) -> None:
        self._closed = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock, limit=MAX_LINE)
        self._ready.set()
        async with server:
            await self._closed.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(lambda _loop, context: log.debug("metrics server: %s", context.get("message")))
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._ready.set()
            loop.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="copydicom-http", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        host, port = self.address
        log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)

    def stop(self) -> None:
        if self._thread is not None and self._loop is not None and self._closed is not None:
            closed = self._closed
            try:
                self._loop.call_soon_threadsafe(closed.set)
            except RuntimeError:  # the loop already ended
                pass
            self._thread.join(timeout=10)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close()
