"""The listener in a child process of its own (``receiver: process``, the default).

Why: pynetdicom's upper layer is Python, CPU-bound, one thread per association
plus one for its DUL; the forwarding pipeline (reading spool entries, checking
them, HTTP to the destination, the ledger) in the same interpreter competes for
the same lock, and every millisecond it holds it is added to the sender's wait
for each C-STORE response.  In its own process the receiver keeps a core.  The
spool is already the durable hand-off (an entry exists only once written,
flushed and renamed, :mod:`.spool`), so nothing else crosses the boundary but:

- a wake-up pipe (one byte per instance made durable; the drain waits on it
  instead of polling the directory);
- the counters, in a shared memory file (``memfd``) both processes map;
- the configuration (JSON on the child's stdin) and one line back on its stdout
  (the bound port, or why it could not bind).

Lifetimes: the child asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``), and also stops when its stdin reaches end of file or
its parent process changes, so a
SIGKILLed ``copydicom listen`` leaves no receiver acknowledging into a spool that
nobody drains, and its port is free for the restart.  The parent restarts a
child that died (:meth:`ReceiverProcess.ensure_running`, called at each poll).
Only the parent drains and removes entries, so nothing is sent twice.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import errno
import json
import logging
import mmap
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from copydicom.endpoints.dimse._config import ListenerConfig
from copydicom.endpoints.dimse.listener import RUNNING, Listener, ListenerStats
from copydicom.endpoints.dimse.spool import ReceiveSpool
from copydicom.errors import SourceUnavailable

log = logging.getLogger(__name__)

#: How long a new receiver retries binding a port still held by a receiver being killed (a restart
#: right after SIGKILL of the previous ``copydicom listen``).
BIND_RETRY_SECONDS = 5.0
#: How long the parent waits for the child's first line (importing pynetdicom and binding).
START_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1
#: The one thread that starts receiver processes (its worker lives until the interpreter exits).
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-spawner")


def _log_args() -> list[str]:
    """The parent's logging (level, JSON lines) as ``copydicom`` command-line flags for the child."""
    root = logging.getLogger()
    args: list[str] = []
    level = logging.getLogger("copydicom").getEffectiveLevel()
    if level <= logging.DEBUG:
        args.append("-vv")
    elif level <= logging.INFO:
        args.append("-v")
    if any(type(h.formatter).__name__ == "_JsonFormatter" for h in root.handlers):
        args.append("--log-json")
    return args


class ReceiverProcess:
    """The parent's handle on a receiving child: same surface as :class:`~.listener.Listener`.

    Parameters
    ----------
    config
        The ``dimse_listener`` endpoint.
    spool
        The spool the child writes into (the parent reads and removes).
    """

    def __init__(self, config: ListenerConfig, spool: ReceiveSpool) -> None:
        self.config = config
        self.spool = spool
        self._stats_fd = os.memfd_create("copydicom-listener-stats")
        os.ftruncate(self._stats_fd, ListenerStats.SIZE)
        self.stats = ListenerStats(mmap.mmap(self._stats_fd, ListenerStats.SIZE))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._stopping = False
        self.restarts = 0

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> ReceiverProcess:
        """Start the child and wait until it listens; raise ``OSError`` if it cannot bind."""
        if self._proc is not None:
            return self
        self._stopping = False
        # Started from one long-lived thread: the kernel's parent-death signal fires when the thread that
        # started the child ends, not the process, and restarts come from whatever thread polls.
        proc = _SPAWNER.submit(
            subprocess.Popen,
            [sys.executable, "-m", "copydicom.endpoints.dimse.receiver", "--wake-fd", str(self._wake_w),
             "--stats-fd", str(self._stats_fd), "--parent", str(os.getpid()), *_log_args()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(self._wake_w, self._stats_fd),
        ).result()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(self.config.model_dump_json().encode() + b"\n")
            proc.stdin.flush()
            answer = _read_line(proc.stdout, START_TIMEOUT)
        except BaseException:
            _kill(proc)
            raise
        if not answer:
            code = _kill(proc)
            raise OSError(errno.EIO, f"receiver process ended before listening (exit status {code})")
        reply = json.loads(answer)
        if "port" not in reply:
            _kill(proc)
            raise OSError(int(reply.get("errno") or errno.EIO), str(reply.get("error", "cannot listen")))
        self._proc = proc
        self._port = int(reply["port"])
        RUNNING[self.config.name] = self
        log.info("listener %s: receiving in process %d on %s:%d", self.config.name, proc.pid, self.config.host,
                 self._port)
        return self

    @property
    def port(self) -> int:
        assert self._port is not None
        return self._port

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        """Stop the child (end of its stdin; SIGKILL after 10 s) and close what it shared."""
        self._stopping = True
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                _kill(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if RUNNING.get(self.config.name) is self:
            del RUNNING[self.config.name]

    def check(self) -> None:
        """Raise :class:`~copydicom.errors.SourceUnavailable` unless the receiving child runs."""
        proc = self._proc
        if proc is None:
            raise SourceUnavailable(f"listener {self.config.name}: receiver process not running")
        code = proc.poll()
        if code is not None:
            raise SourceUnavailable(f"listener {self.config.name}: receiver process exited (status {code})")

    def ensure_running(self) -> None:
        """Restart a child that died (crash, OOM kill); a failed restart is retried at the next call."""
        proc = self._proc
        if self._stopping or proc is None or proc.poll() is None:
            return
        log.error("listener %s: receiver process %d exited (status %s); restarting it", self.config.name, proc.pid,
                  proc.returncode)
        self._proc = None
        if proc.stdout is not None:
            proc.stdout.close()
        self.restarts += 1
        try:
            self.start()
        except OSError as exc:
            log.error("listener %s: cannot restart the receiver: %s", self.config.name, exc.strerror or exc)

    # -- arrivals ----------------------------------------------------------------------------

    def _drain_wakeups(self) -> bool:
        got = False
        while True:
            try:
                chunk = os.read(self._wake_r, 4096)
            except BlockingIOError:
                return got
            if not chunk:
                return got
            got = True

    def clear_arrivals(self) -> None:
        self._drain_wakeups()

    def wait_arrival(self, seconds: float) -> bool:
        """Block until the child made an instance durable, or ``seconds`` pass."""
        if self._drain_wakeups():
            return True
        readable, _, _ = select.select([self._wake_r], [], [], seconds)
        return bool(readable) and (self._drain_wakeups() or True)

    def wake(self) -> None:
        """Release a :meth:`wait_arrival` at once (stopping)."""
        try:
            os.write(self._wake_w, b"\x00")
        except (BlockingIOError, OSError):
            pass

    def notify(self) -> None:
        self.wake()

    def close(self) -> None:
        self.stop()
        for fd in (self._wake_r, self._wake_w, self._stats_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from the child's stdout, or ``b""`` if it ended; ``TimeoutError`` after ``timeout``."""
    readable, _, _ = select.select([stream], [], [], timeout)
    if not readable:
        raise TimeoutError(f"receiver process did not answer within {timeout:.0f}s")
    return stream.readline()


def _kill(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.kill()
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        return None


# -- the child --------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux ``prctl``), and exit if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the stdin end-of-file still stops it
        pass
    if os.getppid() != parent:
        os._exit(1)


def _bind(listener: Listener) -> None:
    deadline = time.monotonic() + BIND_RETRY_SECONDS
    while True:
        try:
            listener.start()
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    """The child: listen, write the spool, answer; stop on end of stdin or SIGTERM."""
    parser = argparse.ArgumentParser(prog="copydicom-receiver")
    parser.add_argument("--wake-fd", type=int, required=True)
    parser.add_argument("--stats-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--log-json", action="store_true")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the parent, which stops us

    from copydicom.logsetup import configure_logging

    configure_logging(json_lines=args.log_json, verbose=args.verbose)
    config = ListenerConfig.model_validate_json(sys.stdin.buffer.readline())
    wake_fd = args.wake_fd
    os.set_blocking(wake_fd, False)

    def arrived() -> None:
        try:
            os.write(wake_fd, b"\x00")
        except OSError:  # pipe full: the drain has wake-ups pending already
            pass

    stats = ListenerStats(mmap.mmap(args.stats_fd, ListenerStats.SIZE))
    out = sys.stdout
    try:
        spool = ReceiveSpool(config.spool, fsync=config.fsync)
        listener = Listener(config, spool, on_arrival=arrived, stats=stats)
        _bind(listener)
    except OSError as exc:
        out.write(json.dumps({"error": exc.strerror or str(exc), "errno": exc.errno}) + "\n")
        out.flush()
        return 2
    out.write(json.dumps({"port": listener.port}) + "\n")
    out.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def parent_gone() -> None:
        sys.stdin.buffer.read()  # returns at end of file: the parent closed it or died
        stop.set()

    threading.Thread(target=parent_gone, daemon=True, name="parent-watch").start()
    status = 0
    while not stop.wait(1.0):
        if os.getppid() != args.parent:  # the parent is gone (should the death signal not have come)
            break
        try:
            listener.check()
        except SourceUnavailable as exc:
            log.error("%s", exc)
            status = 1
            break
    listener.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
