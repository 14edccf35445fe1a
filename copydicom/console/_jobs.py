"""Background upload jobs: one at a time, with progress counts and a per-file result without PHI."""

from __future__ import annotations

import csv
import io
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from copydicom.errors import CopyDicomError

JobState = Literal["queued", "running", "done", "failed"]

#: The summary line's keys, in its order (``/api/jobs/{id}`` reports the same). ``warnings`` is
#: always present in the JSON (a fixed shape for scripts); the summary line prints it when non-zero.
SUMMARY_KEYS = ("replicated", "skipped_existing", "quarantined", "failed", "warnings")
_KIND_TO_KEY = {"stored": "replicated", "existing": "skipped_existing", "quarantined": "quarantined", "failed": "failed",
                "warning": "warnings"}


class UploadRunner(Protocol):
    """Runs the files of an upload through a route's pipeline.

    ``on_outcome(file_index, kind, reason)`` is called once per file; the
    reason is already free of patient data (the pipeline's quarantine reasons are).
    A file a destination stored with a warning gets a second call with kind
    ``"warning"`` (counted in ``warnings``, as in the summary line; it stays
    counted in ``replicated``).
    """

    def __call__(
        self, files: list[Path], *, route: str, patient_csv: Path | None,
        on_outcome: Callable[[int, str, str], None],
    ) -> None: ...


@dataclass
class Job:
    """One upload job (kept in memory; its files are deleted when it ends)."""

    id: str
    route: str
    user: str
    total: int
    refused: list[tuple[str, str]]
    state: JobState = "queued"
    counts: Counter[str] = field(default_factory=Counter)
    results: list[tuple[int, str, str]] = field(default_factory=list)
    error: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def as_dict(self) -> dict[str, Any]:
        counts = {key: self.counts.get(key, 0) for key in SUMMARY_KEYS}
        counts["refused"] = len(self.refused)
        state = "running" if self.state in ("queued", "running") else self.state
        return {
            "job": self.id, "state": state, "route": self.route, "total": self.total,
            "counts": counts, "error": self.error, "created": self.created, "finished": self.finished,
        }

    def result_csv(self) -> str:
        """Per-file outcome: the file's position in the upload, outcome and reason (no names, no values)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["item", "outcome", "reason"])
        for index, kind, reason in sorted(self.results):
            writer.writerow([f"file-{index + 1:06d}", _KIND_TO_KEY.get(kind, kind), reason])
        for label, reason in self.refused:
            writer.writerow([label, "refused", reason])
        return out.getvalue()


class JobManager:
    """Runs upload jobs one after another in a background thread.

    One at a time on purpose: an upload shares the machine with the daemon's
    routes, and a second large upload would only slow both.
    """

    def __init__(self, runner: UploadRunner, *, keep: int = 200) -> None:
        self.runner = runner
        self.keep = keep
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: list[tuple[Job, list[Path], Path | None, Path]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(
        self, files: list[Path], *, route: str, user: str, patient_csv: Path | None,
        folder: Path, refused: list[tuple[str, str]],
    ) -> Job:
        job = Job(uuid.uuid4().hex[:16], route, user, len(files), refused)
        with self._lock:
            self.jobs[job.id] = job
            self._queue.append((job, files, patient_csv, folder))
            for old in sorted(self.jobs.values(), key=lambda j: j.created)[: max(0, len(self.jobs) - self.keep)]:
                if old.state in ("done", "failed"):
                    del self.jobs[old.id]
        self._ensure_thread()
        self._wake.set()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="copydicom-console-jobs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                item = self._queue.pop(0) if self._queue else None
            if item is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(*item)

    def _run(self, job: Job, files: list[Path], patient_csv: Path | None, folder: Path) -> None:
        job.state = "running"

        def on_outcome(index: int, kind: str, reason: str) -> None:
            job.counts[_KIND_TO_KEY.get(kind, kind)] += 1
            job.results.append((index, kind, reason))

        try:
            self.runner(files, route=job.route, patient_csv=patient_csv, on_outcome=on_outcome)
            job.state = "done"
        except CopyDicomError as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001 - a job must end with a state, whatever broke
            job.state, job.error = "failed", f"unexpected {type(exc).__name__}"
        finally:
            job.finished = time.time()
            shutil.rmtree(folder, ignore_errors=True)  # uploaded PHI does not outlive its job

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
