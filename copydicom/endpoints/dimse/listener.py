"""The C-STORE receiver (``dimse_listener``): a push source whose spool feeds the pipeline.

A sender's association is accepted only from a configured calling AE title
(otherwise A-ASSOCIATE-RJ, rejected-permanent, source service-user, reason
"calling-AE-title-not-recognized", PS3.8 9.3.4 and Table 9-21; pynetdicom's
``require_calling_aet`` sends exactly that) and, optionally, from configured
addresses.  Every storage SOP class is supported with every transfer syntax
pynetdicom knows, and pynetdicom accepts the first one the sender proposes,
so instances arrive as sent and are stored as received, never transcoded.

Each instance is made durable in the :class:`~.spool.ReceiveSpool` before
Success (0x0000) is returned; a write error answers 0xA700 "Refused: Out of
Resources" (PS3.4 B.2.3) so that the sender keeps its copy.  The
:class:`SpoolRunner` hands spool entries to the route's pipeline and removes
them once delivered or quarantined.
"""

from __future__ import annotations

import io
import logging
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copydicom.endpoints.dimse._log import quiet_pynetdicom
from copydicom.endpoints.dimse._config import ListenerConfig
from copydicom.endpoints.dimse._part10 import dataset_identity, file_meta, spooled_identity
from copydicom.endpoints.dimse.spool import ReceiveSpool, SpoolEntry
from copydicom.errors import ConfigError, InvalidInstance, SourceUnavailable
from copydicom.model import Identity, InstanceRef
from copydicom.stages.structure import checked_keeping_bytes

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)
quiet_pynetdicom()

#: PS3.4 Table B.2-1: "Refused: Out of Resources".
OUT_OF_RESOURCES = 0xA700
#: PS3.4 Table B.2-1: "Error: Cannot understand".
CANNOT_UNDERSTAND = 0xC000
SUCCESS = 0x0000

_IDENTITY_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


def identity_of(data: bytes | Path) -> Identity:
    """The identity of a Part 10 byte string or file, reading only the header (not the pixels)."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, stop_before_pixels=True,
                 specific_tags=_IDENTITY_TAGS)
    return Identity.from_dataset(ds)


class ListenerStats:
    """Counters of one listener, for ``status`` and metrics (thread-safe updates, attribute reads).

    The values live in a buffer of signed 64-bit integers: a private one, or
    (receiver process) a shared memory mapping that the receiving child
    writes and the parent reads.

    Parameters
    ----------
    buffer
        Writable buffer of at least :data:`SIZE` bytes (default: a new one).
    """

    FIELDS = ("associations", "rejected_associations", "refused_addresses", "aborted_associations",
              "instances_received", "store_failures")
    SIZE = 8 * len(FIELDS)
    _INDEX = {name: i for i, name in enumerate(FIELDS)}

    def __init__(self, buffer: Any = None) -> None:
        self._buffer = buffer if buffer is not None else bytearray(self.SIZE)
        self._values = memoryview(self._buffer).cast("B")[: self.SIZE].cast("q")
        self._lock = threading.Lock()

    def bump(self, counter: str) -> None:
        index = self._INDEX[counter]
        with self._lock:
            self._values[index] += 1

    def __getattr__(self, name: str) -> int:
        index = type(self)._INDEX.get(name)
        if index is None:
            raise AttributeError(name)
        return int(self._values[index])

    def as_dict(self) -> dict[str, int]:
        return {name: int(self._values[i]) for i, name in enumerate(self.FIELDS)}


def server_ssl_context(cfg: ListenerConfig) -> ssl.SSLContext | None:
    """The TLS context of a listener (PS3.15 B.1: TLS 1.2 or newer), or ``None`` for plaintext."""
    if cfg.tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
    if cfg.tls.ca is not None:
        ctx.load_verify_locations(cafile=str(cfg.tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.tls.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


class SharedContexts(list[Any]):
    """The listener's supported presentation contexts, shared read-only by all its associations.

    pynetdicom deep-copies the server's contexts for every association
    (``RequestHandler._create_association``): with every storage SOP class x
    every transfer syntax (170 contexts) that copy measured 50 ms of CPU per
    association, the whole cost of an instance for a sender that opens one
    association per instance.  The acceptor only reads them
    (``presentation.negotiate_as_acceptor`` builds new result contexts), so
    the copy returns the same list.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


def _server_class() -> type[ThreadedAssociationServer]:
    from pynetdicom.transport import ThreadedAssociationServer

    class _Server(ThreadedAssociationServer):
        """pynetdicom's threaded server, with an address filter and the TLS handshake off the accept thread.

        pynetdicom wraps accepted sockets in the accepting thread with the
        handshake done at once, so one client that never completes it would
        stall every other; here the handshake happens on the association's
        own thread (its first read), bounded by the network timeout.
        """

        listener: Listener

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.contexts = SharedContexts(self.contexts)

        def verify_request(self, request: Any, client_address: Any) -> bool:
            address = client_address[0] if isinstance(client_address, tuple) else str(client_address)
            if self.listener.config.allows_address(address):
                return True
            self.listener.stats.bump("refused_addresses")
            log.warning("listener %s: connection from %s refused (not in allowed_addresses)",
                        self.listener.config.name, address)
            return False

        def get_request(self) -> Any:
            assert self.socket is not None
            client, address = self.socket.accept()
            if self.ssl_context:
                client.settimeout(self.listener.config.timeout)
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            return client, address

    return _Server


#: Listeners running in this process, by endpoint name (for ``status`` and metrics).
#: A :class:`Listener` or a :class:`~.receiver.ReceiverProcess` (same surface: stats, spool, check).
RUNNING: dict[str, Any] = {}


class Listener:
    """A C-STORE SCP writing into a receive spool.

    Parameters
    ----------
    config
        The ``dimse_listener`` endpoint.
    spool
        Where received instances go.
    """

    def __init__(self, config: ListenerConfig, spool: ReceiveSpool, *,
                 on_arrival: Callable[[], None] | None = None, stats: ListenerStats | None = None) -> None:
        self.config = config
        self.spool = spool
        self.stats = stats or ListenerStats()
        self.arrived = threading.Event()
        self.on_arrival = on_arrival
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._ae_obj: Any = None

    def _ae(self) -> Any:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES[:3])
        ae.require_calling_aet = list(cfg.allowed_calling)
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu
        ae.acse_timeout = cfg.timeout
        ae.dimse_timeout = cfg.timeout
        ae.network_timeout = cfg.timeout
        return ae

    def start(self) -> Listener:
        """Bind and serve on a background thread; raise ``OSError`` if the port cannot be bound."""
        from pynetdicom import evt

        if self._server is not None:
            return self
        ae = self._ae()
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        server = ae.make_server(
            (self.config.host, self.config.port),
            ssl_context=server_ssl_context(self.config),
            evt_handlers=handlers,
            server_class=_server_class(),
        )
        server.listener = self
        # As AE.start_server does (it has no server_class parameter): AE.shutdown() then stops
        # this server and aborts its associations.
        ae._servers.append(server)
        self._ae_obj = ae
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"dimse-listener-{self.config.name}",
                                        daemon=True)
        self._thread.start()
        RUNNING[self.config.name] = self
        log.info("listener %s: %s listening on %s:%d (%s)", self.config.name, self.config.ae_title,
                 self.config.host, self.config.port, "TLS" if self.config.tls else "plaintext")
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop accepting and close the socket; associations in progress are aborted."""
        server, self._server = self._server, None
        if server is None:
            return
        # AE.shutdown() aborts every association, but an A-ABORT before the association is negotiated
        # (state Sta2: a client that connected and said nothing) is invalid in pynetdicom's state machine
        # and raises in that association's thread: close those connections instead (event 17).
        for assoc in list(self._ae_obj.active_associations):
            if not assoc.is_established:
                try:
                    assoc.dul.socket.close()
                except Exception:  # already gone
                    pass
        self._ae_obj.shutdown()
        if RUNNING.get(self.config.name) is self:
            del RUNNING[self.config.name]

    def notify(self) -> None:
        """An instance was made durable: wake whatever drains the spool."""
        self.arrived.set()
        if self.on_arrival is not None:
            self.on_arrival()

    def clear_arrivals(self) -> None:
        self.arrived.clear()

    def wait_arrival(self, seconds: float) -> bool:
        """Block until an instance arrives or ``seconds`` pass; ``True`` if one arrived."""
        return self.arrived.wait(seconds)

    def wake(self) -> None:
        """Release a :meth:`wait_arrival` at once (stopping)."""
        self.arrived.set()

    def check(self) -> None:
        """Raise :class:`~copydicom.errors.SourceUnavailable` unless the server thread runs and is bound."""
        server, thread = self._server, self._thread
        if server is None or thread is None or not thread.is_alive():
            raise SourceUnavailable(f"listener {self.config.name}: not running")
        try:
            server.socket.getsockname()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            raise SourceUnavailable(f"listener {self.config.name}: its socket is closed") from None

    # -- events (each association runs on its own thread) ---------------------------------

    def _on_established(self, event: Event) -> None:
        self.stats.bump("associations")

    def _on_rejected(self, event: Event) -> None:
        self.stats.bump("rejected_associations")
        calling = event.assoc.requestor.ae_title
        log.warning("listener %s: association from %s (calling AE %r) rejected",
                    self.config.name, event.assoc.requestor.address, calling)

    def _on_aborted(self, event: Event) -> None:
        self.stats.bump("aborted_associations")

    def _on_store(self, event: Event) -> int:
        """Make the instance durable, then answer; never Success before it is on disk.

        The dataset is stored as received: the file meta is built from the
        request (:func:`._part10.file_meta`), the identity is read from the
        dataset's header (:func:`._part10.dataset_identity`), and the two parts
        are written without being joined.
        """
        try:
            request: Any = event.request
            dataset = request.DataSet.getvalue()
            transfer_syntax = event.context.transfer_syntax
            identity = dataset_identity(dataset, transfer_syntax)
            meta = file_meta(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, transfer_syntax)
        except Exception as exc:  # a dataset pydicom cannot read: the sender keeps it
            self.stats.bump("store_failures")
            log.warning("listener %s: unreadable dataset (%s)", self.config.name, type(exc).__name__)
            return CANNOT_UNDERSTAND
        if not identity.sop_uid:
            self.stats.bump("store_failures")
            return CANNOT_UNDERSTAND
        key = identity.orthanc_id
        try:
            self.spool.put(key, (meta, dataset))
        except OSError as exc:
            self.stats.bump("store_failures")
            log.error("listener %s: cannot spool instance %s: %s", self.config.name, key, exc.strerror or exc)
            return OUT_OF_RESOURCES
        self.stats.bump("instances_received")
        self.notify()
        return SUCCESS


class ListenerSource:
    """The source of a listener route: the receive spool, in batches by series.

    Implements :class:`~copydicom.model.Source` and
    :class:`~copydicom.model.RouteDriver` (:meth:`runner` starts the network
    listener).  ``source_id`` of each reference is the instance's Orthanc ID
    (the spool entry's name).
    """

    #: Instances a sender just pushed are new to the destination as a rule: a destination whose store
    #: answers "already stored" is not asked before (:meth:`copydicom.pipeline.Pipeline._store_answers`).
    mostly_new = True

    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
        self.name = config.name
        self.spool = ReceiveSpool(config.spool, fsync=config.fsync)
        self.listener: Any
        if config.receiver == "process":
            from copydicom.endpoints.dimse.receiver import ReceiverProcess

            self.listener = ReceiverProcess(config, self.spool)
        else:
            self.listener = Listener(config, self.spool)
        self._entries: dict[str, SpoolEntry] = {}

    def batches(self) -> Iterator[list[InstanceRef]]:
        """The spool's entries, oldest first, grouped by series (one destination look-up each)."""
        entries = self.spool.entries(self.config.batch)
        groups: dict[str | None, list[InstanceRef]] = defaultdict(list)
        for entry in entries:
            try:
                # The header's first 64 KiB, checked against the entry's name; the whole file only if that fails.
                identity: Identity | None = spooled_identity(entry.path, entry.key) or identity_of(entry.path)
            except FileNotFoundError:
                continue
            except Exception:  # unreadable now: let the pipeline quarantine it with its reason
                identity = None
            self._entries[entry.key] = entry
            series = identity.series_orthanc_id if identity else None
            groups[series].append(InstanceRef(entry.key, identity=identity, series_id=series))
        yield from groups.values()

    def fetch(self, ref: InstanceRef) -> bytes:
        try:
            data = self.spool.path_of(ref.source_id).read_bytes()
        except FileNotFoundError:
            raise InvalidInstance(f"spool entry {ref.source_id} vanished") from None
        except OSError as exc:
            raise SourceUnavailable(f"cannot read spool entry {ref.source_id}: {exc.strerror}") from None
        # As the folder source does: never forward what readers crash on (Orthanc 1.10.1 dies
        # on deep nesting), nor truncated or malformed data; the pipeline quarantines it, with
        # its bytes (the spool entry is the only copy: the sender was told Success).
        return checked_keeping_bytes(data)

    def release(self, ref: InstanceRef) -> bool:
        """Remove a delivered or quarantined entry."""
        entry = self._entries.pop(ref.source_id, None)
        return entry is not None and self.spool.remove(entry)

    def forget(self, ref: InstanceRef) -> None:
        """Keep an entry that failed (retryable) for the next poll."""
        self._entries.pop(ref.source_id, None)

    def runner(self, route: str, pipeline: Any, state: Any) -> SpoolRunner:
        """Start listening and return what drains the spool into ``pipeline``.

        A port that cannot be bound (in use, or below 1024 without the capability) is a
        :class:`~copydicom.errors.ConfigError`: it does not heal by retrying.
        """
        try:
            self.listener.start()
        except OSError as exc:
            raise ConfigError(
                f"endpoints.{self.config.name}: cannot listen on {self.config.host}:{self.config.port}: "
                f"{exc.strerror or exc}"
            ) from None
        return SpoolRunner(route, self, pipeline)

    def status(self) -> dict[str, Any]:
        return listener_status(self.config, self.listener)

    def close(self) -> None:
        closing = getattr(self.listener, "close", None)
        if closing is not None:
            closing()
        else:
            self.listener.stop()


def listener_status(config: ListenerConfig, listener: Listener | None = None) -> dict[str, Any]:
    """Spool depth, age of its oldest entry and the counters (if the listener runs here)."""
    spool = ReceiveSpool(config.spool, fsync=False) if listener is None else listener.spool
    depth, oldest = spool.depth()
    running = listener or RUNNING.get(config.name)
    out: dict[str, Any] = {"spool_depth": depth, "spool_oldest_seconds": oldest}
    if running is not None:
        out.update(running.stats.as_dict())
    return out


class SpoolRunner:
    """Drains a listener's spool through the route's pipeline (the daemon calls :meth:`poll`).

    An entry leaves the spool only when its outcome is ``stored``,
    ``existing`` or ``quarantined`` (the quarantine keeps the bytes); a
    ``failed`` one (retryable) stays and the poll ends, to be retried on the
    route's schedule.  After a crash the next start simply lists the spool
    again: the ledger and the destination recognise what was already sent.
    """

    def __init__(self, route: str, source: ListenerSource, pipeline: Any) -> None:
        self.route = route
        self.source = source
        self.pipeline = pipeline
        #: A change feed's newest position, for the daemon's backlog metric; a spool has none.
        self.last_seen: int | None = None
        #: A change feed's reset (the daemon's /healthz reads it); a spool cannot be reset.
        self.feed_reset: Any = None

    def poll(self) -> Any:
        from copydicom.pipeline import Summary

        summary = Summary()
        ensure_running = getattr(self.source.listener, "ensure_running", None)
        if ensure_running is not None:  # a receiver process that died is restarted here
            ensure_running()
        while not self.pipeline.stop_event.is_set():
            self.source.listener.clear_arrivals()
            batches = list(self.source.batches())
            if not batches:
                break
            failed = False
            finished: list[InstanceRef] = []
            for outcome in self.pipeline.stream(batches):
                summary.add(outcome)
                if outcome.kind == "failed":
                    failed = True
                    self.source.forget(outcome.ref)
                else:
                    finished.append(outcome.ref)
            # The ledger (deliveries, quarantine rows) is on disk before any entry leaves the spool.
            self.pipeline.ledger.flush()
            for ref in finished:
                self.source.release(ref)
            if failed:
                break
        return summary

    def wait(self, seconds: float) -> bool:
        """Block until an instance arrives or ``seconds`` pass; ``True`` if one arrived."""
        return bool(self.source.listener.wait_arrival(seconds))


def probe(config: ListenerConfig) -> None:
    """Health of a listener (the registry ``probe``: ``/healthz`` and ``check-config``).

    In the process that runs it (the daemon): its receiving process, or its
    server thread, is alive and its socket bound (:meth:`Listener.check`,
    :meth:`~.receiver.ReceiverProcess.check`).  Elsewhere (``check-config``):
    the port is either free (the listener can start) or answers C-ECHO
    (PS3.4 A.4) to the listener's AE title from its first allowed calling AE
    title (it is running elsewhere); TLS listeners are only checked to
    accept connections.  Raises :class:`~copydicom.errors.SourceUnavailable`
    naming the listener, never patient data.
    """
    import socket

    running = RUNNING.get(config.name)
    if running is not None:
        running.check()
        return
    host = "127.0.0.1" if config.host in ("0.0.0.0", "", "::") else config.host
    try:
        with socket.create_connection((host, config.port), timeout=5):
            pass
    except OSError:
        return  # nothing listens: the port is free for the listener
    if config.tls is not None:
        return
    from copydicom.endpoints.dimse._config import DimseConfig
    from copydicom.endpoints.dimse.scu import echo

    peer = DimseConfig(name=config.name, called_aet=config.ae_title, host=host, port=config.port,
                       calling_aet=config.allowed_calling[0], timeout=5.0)
    try:
        status, _ = echo(peer)
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the finding
        raise SourceUnavailable(f"listener {config.name}: {host}:{config.port} is in use and does not answer "
                                f"C-ECHO as {config.ae_title} ({type(exc).__name__})") from None
    if status != SUCCESS:
        raise SourceUnavailable(f"listener {config.name}: C-ECHO answered 0x{status:04X}")


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``host:port`` (tests, the CLI)."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
