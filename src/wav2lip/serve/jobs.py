"""Lip-sync jobs on disk and the bounded queue of worker threads that runs them.

A job is a folder `<data dir>/jobs/<id>/` holding the uploads (`face`, `audio`: fixed names, never the
client's), the result once done, and `job.json`, rewritten atomically at every change of status. The
folder is the job: a server started on the same data dir finds its jobs again, queues those that were
queued, and marks failed the ones that were running when it stopped. Finished jobs are removed by age
and when the folders together grow past a size limit, oldest first.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from .. import store
from ..device import PRECISIONS
from ..errors import Wav2LipError
from ..faces import DETECTORS
from ..faces.detectors import WEIGHT_NAMES
from ..lipsync.offline import LipSyncer, SyncOptions

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
JOB_FILE = "job.json"
FACE, AUDIO = "face", "audio"  # upload file names inside a job folder
MARK = ".made-by-wav2lip"  # in every folder the server makes: it removes no folder without it
CRASHED = "the server stopped while this job was running; submit it again"
STOPPED = "the server was shut down while this job was running; submit it again"
DISK_FULL = "the server could not write this job's files ({}); it keeps serving: submit it again later"
MAX_MODELS = 2  # generators held at once (the server's own and the one asked for last): each is a full network
_SWEEP_SECONDS = 60.0  # how often idle workers apply the retention limits


def _remove_uploads(folder: Path) -> None:
    """A finished job needs its uploads no more: only its record and result stay."""
    for name in (FACE, AUDIO):
        (folder / name).unlink(missing_ok=True)


def _keep_record_only(folder: Path) -> None:
    """A job that stopped in the middle (a crash): its uploads and any result, whole or partial, go; a
    result of a job that is not done is never served, and nothing is left orphaned."""
    for path in folder.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name not in (MARK, JOB_FILE):
            path.unlink(missing_ok=True)


def make_folder(path: Path) -> Path:
    """A new folder of the server's own (never one that exists), marked so it is known as such later."""
    path.mkdir(parents=True, exist_ok=False)
    (path / MARK).touch()
    return path


def made_here(path: Path) -> bool:
    """A folder the server made (a uuid hex name and the mark): the only kind it may remove unasked."""
    name = path.name
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name) and (path / MARK).is_file()


class QueueFull(Exception):
    """More jobs are waiting than the server accepts."""


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


@dataclass
class Job:
    """One request and what became of it; `public()` is its JSON form in the API."""

    id: str
    folder: Path
    options: dict  # SyncOptions fields (JSON types: tuples stored as lists)
    detector: str
    precision: str
    face_name: str  # the client's file names: shown, never used as paths
    audio_name: str
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    frames: int = 0
    frames_total: int = 0
    faces_missed: int | None = None
    error: str | None = None
    result: str | None = None  # file name of the result inside the folder
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    _SAVED = ("id", "options", "detector", "precision", "face_name", "audio_name", "status", "created",
              "started", "finished", "frames", "frames_total", "faces_missed", "error", "result")

    @property
    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        return min(1.0, self.frames / self.frames_total) if self.frames_total else 0.0

    @property
    def speed(self) -> float | None:
        """Frames per second since the job started."""
        if self.started is None or not self.frames:
            return None
        return self.frames / max((self.finished or time.time()) - self.started, 1e-6)

    def public(self) -> dict:
        speed = self.speed
        eta = None
        if self.status == "running" and speed and self.frames_total:
            eta = round(max(self.frames_total - self.frames, 0) / speed, 1)
        return {
            "id": self.id, "status": self.status, "progress": round(self.progress, 4), "frames": self.frames,
            "frames_total": self.frames_total, "faces_missed": self.faces_missed, "error": self.error,
            "created": _iso(self.created), "started": _iso(self.started), "finished": _iso(self.finished),
            "speed": None if speed is None else round(speed, 2), "eta": eta, "face": self.face_name,
            "audio": self.audio_name, "detector": self.detector, "precision": self.precision,
            "options": self.options, "result": f"/api/jobs/{self.id}/result" if self.status == "done" else None,
        }

    def save(self) -> None:
        """job.json, replaced atomically so a crash never leaves half a file."""
        data = {name: getattr(self, name) for name in self._SAVED}
        tmp = self.folder / f".{JOB_FILE}.tmp"
        try:
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.folder / JOB_FILE)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, folder: Path) -> Job:
        data = json.loads((folder / JOB_FILE).read_text())
        if data.get("status") not in STATUSES or data.get("id") != folder.name:
            raise ValueError(f"{folder / JOB_FILE}: not a job record")
        return cls(folder=folder, **{k: data[k] for k in cls._SAVED})

    def plain(self, message: str) -> str:
        """A pipeline message with the job folder's paths replaced by what the client knows them as."""
        for path, name in ((self.folder / FACE, self.face_name), (self.folder / AUDIO, self.audio_name)):
            message = message.replace(str(path), name)
        return message.replace(f"{self.folder}{os.sep}", "").replace(str(self.folder), "job")


def sync_options(options: dict) -> dict:
    """Stored options back as `SyncOptions` keyword arguments (lists -> tuples)."""
    names = {f.name for f in fields(SyncOptions)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k in names}


class Models:
    """The loaded generator and detector, one `LipSyncer` per (detector, precision) a job asks for:
    the server's own loaded at start and kept, any other on first use, at most MAX_MODELS at once."""

    def __init__(self, checkpoint: str | Path, detector: str = "retinaface", device: str = "auto",
                 precision: str = "auto", detector_weights: str | Path | None = None, backend: str = "torch",
                 face_det_batch_size: int = 16, speaker_model: str | Path | None = None,
                 enhancer_weights: str | Path | None = None) -> None:
        self.args = dict(checkpoint=checkpoint, device=device, backend=backend,
                         face_det_batch_size=face_det_batch_size, speaker_model=speaker_model,
                         enhancer_weights=enhancer_weights)
        self.speaker_model_name = Path(str(speaker_model)).name if speaker_model else None
        self.detector_weights = detector_weights
        self.default = LipSyncer(detector=detector, precision=precision,
                                 detector_weights=_detector_file(detector, detector_weights), **self.args)
        self.default.detector  # noqa: B018 - loaded now, not by the first job
        self.detector, self.precision = detector, self.default.precision
        self.checkpoint_name = Path(str(checkpoint)).name
        self._syncers = OrderedDict({(detector, self.precision): self.default})  # least recently used first
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[tuple[str, str]]:
        """The (detector, precision) of each generator held now."""
        with self._lock:
            return list(self._syncers)

    def key(self, detector: str | None, precision: str | None) -> tuple[str, str]:
        detector = detector or self.detector
        precision = self.precision if precision in (None, "auto") else precision
        if detector not in DETECTORS:
            raise Wav2LipError(f"unknown face detector {detector!r} (one of {', '.join(DETECTORS)})")
        if precision not in PRECISIONS:
            raise Wav2LipError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
        return detector, precision

    def get(self, detector: str, precision: str) -> LipSyncer:
        """The LipSyncer for this choice, loaded if need be; beyond MAX_MODELS the one used longest ago
        (never the server's own) is let go, and jobs still running with it keep it until they end."""
        key = self.key(detector, precision)
        with self._lock:
            if key not in self._syncers:
                weights = _detector_file(key[0], self.detector_weights if key[0] == self.detector else None)
                syncer = LipSyncer(detector=key[0], precision=key[1], detector_weights=weights, **self.args)
                syncer.detector  # noqa: B018 - fail now (missing weights) rather than in the job
                self._syncers[key] = syncer
            self._syncers.move_to_end(key)
            while len(self._syncers) > MAX_MODELS:
                oldest = next(k for k, v in self._syncers.items() if v is not self.default)
                del self._syncers[oldest]
            return self._syncers[key]


def _detector_file(detector: str, weights: str | Path | None) -> Path:
    """The detector's weights found (or fetched) before a generator is loaded for it: a missing file is
    refused at once, not after seconds and hundreds of MB spent on a network that cannot run."""
    if detector not in DETECTORS:
        raise Wav2LipError(f"unknown face detector {detector!r} (one of {', '.join(DETECTORS)})")
    return store.resolve(weights if weights is not None else WEIGHT_NAMES[detector])


class JobQueue:
    """Jobs by id, a bounded queue of waiting ones and `workers` threads running them in order."""

    def __init__(self, data_dir: str | Path, models: Models, workers: int = 1, max_queued: int = 16,
                 keep_hours: float = 72.0, keep_bytes: int = 10 * 2**30) -> None:
        if workers < 1:
            raise Wav2LipError(f"--workers must be at least 1, got {workers}")
        if max_queued < 1:
            raise Wav2LipError(f"--max-queue must be at least 1, got {max_queued}")
        self.root = Path(data_dir).expanduser() / "jobs"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Wav2LipError(f"{self.root}: cannot create the job folder ({exc.strerror})") from None
        if not os.access(self.root, os.W_OK):
            raise Wav2LipError(f"{self.root}: job folder is not writable")
        self.models, self.workers, self.max_queued = models, workers, max_queued
        self.keep_seconds, self.keep_bytes = keep_hours * 3600, keep_bytes
        self.jobs: dict[str, Job] = {}
        self.pending: deque[str] = deque()
        self.cond = threading.Condition()
        self.closing = False
        self.threads: list[threading.Thread] = []
        self._recover()
        self.sweep()

    # ------------------------------------------------------------ state on disk

    def _recover(self) -> None:
        """Jobs of an earlier server: queued ones queue again, running ones failed (their uploads
        removed); a folder of the server's own without a job record (an upload cut short) is removed,
        anything else in the folder is the user's and left alone."""
        found = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            try:
                job = Job.load(folder)
            except (OSError, ValueError, TypeError, KeyError):
                if made_here(folder):
                    log.warning("%s: an upload cut short, removed", folder)
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    log.warning("%s: not a job folder, left alone", folder)
                continue
            if job.status == "running":
                job.status, job.error, job.finished = "failed", CRASHED, time.time()
                _keep_record_only(folder)
                job.save()
            elif job.status == "done" and not (job.result and (folder / job.result).is_file()):
                job.status, job.error = "failed", "the result file is missing"
                job.save()
            found.append(job)
        for job in sorted(found, key=lambda j: j.created):
            self.jobs[job.id] = job
            if job.status == "queued":
                self.pending.append(job.id)

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its empty folder, for an upload to stream into."""
        job_id = uuid.uuid4().hex
        return job_id, make_folder(self.root / job_id)

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ requests

    def full(self) -> bool:
        with self.cond:
            return len(self.pending) >= self.max_queued

    def submit(self, job: Job) -> None:
        with self.cond:
            if self.closing:
                raise QueueFull("the server is shutting down")
            if len(self.pending) >= self.max_queued:
                raise QueueFull(f"{len(self.pending)} jobs are waiting already; try again later")
            job.save()
            self.jobs[job.id] = job
            self.pending.append(job.id)
            self.cond.notify()

    def get(self, job_id: str) -> Job | None:
        with self.cond:
            return self.jobs.get(job_id)

    def list(self) -> list[Job]:
        with self.cond:
            return sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)

    def counts(self) -> dict[str, int]:
        with self.cond:
            return {s: sum(j.status == s for j in self.jobs.values()) for s in STATUSES}

    def cancel(self, job: Job, wait: float = 5.0) -> Job:
        """Stop a queued or running job (the record is kept, marked cancelled); returns once the
        worker has let go of it, or after `wait` seconds."""
        with self.cond:
            if job.status == "queued":
                self.pending.remove(job.id)
                self._finish(job, "cancelled")
            elif job.status == "running":
                job.cancel.set()
                self.cond.wait_for(lambda: job.status != "running", timeout=wait)
        return job

    def delete(self, job: Job) -> None:
        with self.cond:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    # ------------------------------------------------------------ workers

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"wav2lip-job-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, wait: float = 5.0) -> None:
        """Cancel running jobs (they are marked failed: the server stopped) and end the workers."""
        with self.cond:
            self.closing = True
            for job in self.jobs.values():
                if job.status == "running":
                    job.cancel.set()
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(wait)

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        """Called with the lock held. The uploads go first (room on a full disk); a record that cannot be
        written stays right in memory (a restart finds the one written last: a running job is then failed
        as crashed) and the worker goes on."""
        job.status, job.error, job.finished = status, error, time.time()
        _remove_uploads(job.folder)
        try:
            job.save()
        except OSError as exc:
            log.error("%s: cannot write the job record (%s)", job.folder, exc.strerror)
        self.cond.notify_all()

    def _next(self) -> Job | None:
        with self.cond:
            while not self.pending and not self.closing:
                if not self.cond.wait(timeout=_SWEEP_SECONDS):
                    break
            if self.closing or not self.pending:
                return None
            job = self.jobs[self.pending.popleft()]
            job.status, job.started = "running", time.time()
            try:
                job.save()
            except OSError as exc:
                self._finish(job, "failed", DISK_FULL.format(exc.strerror))
                return None
            return job

    def _work(self) -> None:
        while not self.closing:
            job = self._next()
            if job is not None:
                self._run(job)
            self.sweep()

    def _run(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            job.frames, job.frames_total = done, total

        suffix = ".mkv" if job.options.get("lossless") else ".mp4"
        status, error = "done", None
        try:
            syncer = self.models.get(job.detector, job.precision)
            result = syncer.run(job.folder / FACE, job.folder / AUDIO, job.folder / f"result{suffix}",
                                on_progress=progress, cancel=job.cancel, **sync_options(job.options))
            job.frames, job.faces_missed, job.result = result.frames, result.faces_missed, f"result{suffix}"
        except Wav2LipError as exc:
            if job.cancel.is_set():
                status, error = ("failed", STOPPED) if self.closing else ("cancelled", None)
            else:
                status, error = "failed", job.plain(str(exc))
        except Exception as exc:  # a bug: keep the server up, say so on the job, log the traceback
            log.exception("job %s failed", job.id)
            status, error = "failed", f"internal error: {type(exc).__name__}: {job.plain(str(exc))}"
        with self.cond:
            self._finish(job, status, error)

    # ------------------------------------------------------------ retention

    def sweep(self, now: float | None = None) -> list[str]:
        """Remove finished jobs older than the age limit, then the oldest finished ones while all job
        folders together exceed the size limit. Returns the ids removed."""
        now = time.time() if now is None else now
        with self.cond:
            jobs = list(self.jobs.values())
        finished = sorted((j for j in jobs if j.status in FINISHED), key=lambda j: j.finished or j.created)
        removed = []
        sizes = {j.id: _folder_bytes(j.folder) for j in jobs}
        total = sum(sizes.values())
        for job in finished:
            if now - (job.finished or job.created) > self.keep_seconds or total > self.keep_bytes:
                total -= sizes.get(job.id, 0)
                self.delete(job)
                removed.append(job.id)
        return removed


def sanitize_name(name: str | None, default: str) -> str:
    """A client's file name reduced to something safe to show: its last component, printable, short."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:120] if name.strip(".") else default  # "..", ".": no name

