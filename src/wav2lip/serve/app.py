"""The HTTP API and the page, one FastAPI app over a `JobQueue`.

Uploads never pass through FastAPI's form parsing (which spools whole files before the handler runs):
the body is streamed into the job folder by `form.receive` under the size limit, then the inputs are
checked exactly as `LipSyncer.run` would check them before a job is queued.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from dataclasses import asdict
from pathlib import Path
from typing import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from .. import __version__
from ..io.audio import audio_seconds
from ..errors import Wav2LipError
from ..faces import DETECTORS
from ..device import PRECISIONS
from ..lipsync.options import SyncOptions, options_for, public_table
from .form import JOBS, TooLarge, boundary_of, parse_client_options, receive, request_schema
from .guard import DRAIN_BYTES, HostGuard
from .jobs import AUDIO, FACE, Job, JobQueue, QueueFull
from .live import MAX_SESSIONS
from .live import register as register_live

STATIC = Path(__file__).parent / "static"  # package data
_JOB_ID_LENGTH = 32  # uuid4 hex
_MEDIA_TYPES = {".mp4": "video/mp4", ".mkv": "video/x-matroska"}


RETRY_AFTER_S = 10  # what a 503 asks a client to wait before trying again
UPLOAD_GRACE_S = 10.0  # an upload's bytes may lag this long behind ...
UPLOAD_RATE = 32 * 2**10  # ... this many bytes a second (256 kbit/s): a trickle holds no upload place for ever
MAX_AUDIO_MINUTES = 60.0  # default --max-audio-minutes: a job's audio bounds its decoding, its time and its output


def _error(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (503, 507) else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _no_room(exc: OSError) -> JSONResponse:
    return _error(507, f"the server cannot store this upload now ({exc.strerror}); try again later")


def create_app(queue: JobQueue, token: str | None = None, max_upload: int = 500 * 2**20,
               host: str = "127.0.0.1", max_audio_minutes: float = MAX_AUDIO_MINUTES,
               allow_hosts: tuple[str, ...] = (), max_live: int = MAX_SESSIONS) -> FastAPI:
    """The app: `/` the page, `/api/...` the jobs, `/openapi.json` and `/docs` the API's description.
    With a `token`, every /api/jobs request must send `Authorization: Bearer <token>`. Requests must name
    the server by a loopback name, `host` (the address it listens on) or one of `allow_hosts` (names a
    reverse proxy forwards), and come from no other site's page. At most `max_live` live sessions at once."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        queue.start()
        try:
            yield
        finally:
            await run_in_threadpool(queue.stop)

    app = FastAPI(
        title="wav2lip", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Lip-sync a video or photo to speech. Submit a job with POST /api/jobs (multipart: face, "
        "audio and options named as the CLI's), poll GET /api/jobs/{id}, fetch GET /api/jobs/{id}/result.",
    )
    bearer = HTTPBearer(auto_error=False, description="the server's --token / WAV2LIP_TOKEN")

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "this server needs its token: send the header 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    def find(job_id: str) -> Job:
        job = queue.get(job_id) if len(job_id) == _JOB_ID_LENGTH and job_id.isalnum() else None
        if job is None:
            raise HTTPException(404, f"no job {job_id[:40]!r} (finished jobs are removed after a while)")
        return job

    api = APIRouter(prefix="/api/jobs", dependencies=[Depends(authorize)], tags=["jobs"])
    uploading = 0  # requests whose bodies are being received now

    @api.post("", status_code=201, summary="Submit a lip-sync job", openapi_extra={"requestBody": {
        "required": True, "content": {"multipart/form-data": {"schema": request_schema()}}}},
        responses={400: {"description": "a bad file or option (one line, as the CLI says it)"},
                   401: {"description": "no or wrong token"}, 408: {"description": "the upload came too slowly"},
                   413: {"description": "upload too large"},
                   503: {"description": "the queue is full, or as many uploads are arriving (see Retry-After)"},
                   507: {"description": "the server's disk is full (see Retry-After)"}})
    async def submit(request: Request):
        """Upload `face` (video or image) and `audio`, with options as form fields named as the CLI's
        (`blend`, `loop`, `pads`, `box`, `detector`, `smooth`, `fps`, `static`, `precision`, `crf`, ...).
        The files are decoded before the job is accepted. At most as many uploads stream in at once as
        jobs may wait (--max-queue): the disk they take is bounded as the queue's is."""
        nonlocal uploading
        if queue.full():
            await _Body(request).drain()
            return _error(503, "the queue is full; try again when a job has finished")
        if uploading >= queue.max_queued:
            await _Body(request).drain()
            return _error(503, f"{uploading} uploads are arriving already (the server's limit); try again shortly")
        uploading += 1
        try:
            return await accept(request)
        finally:
            uploading -= 1

    async def accept(request: Request) -> Response:
        """One upload streamed into a new job folder, checked, and queued; the folder is gone if not."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload:
            await _Body(request).drain()
            return _error(413, f"the upload is larger than the server's limit of {max_upload / 2**20:g} MiB")
        try:
            boundary = boundary_of(request.headers.get("content-type", ""))
        except Wav2LipError as exc:
            return _error(400, str(exc))
        body = _Body(request)
        try:
            job_id, folder = queue.new_folder()
        except OSError as exc:
            await body.drain()
            return _no_room(exc)
        try:
            upload = await receive(body.chunks(), boundary, folder, max_upload)
            options, detector, precision = parse_client_options(upload.fields)
            recorded = asdict(SyncOptions.from_kwargs(options))  # the defaults too: the job says what ran
            job = Job(job_id, folder, recorded, "", "", upload.names[FACE], upload.names[AUDIO])
            job.detector, job.precision = queue.models.key(detector, precision)
            try:
                seconds = await run_in_threadpool(audio_seconds, folder / AUDIO)
                if seconds > max_audio_minutes * 60:  # refused before it is decoded into memory
                    raise Wav2LipError(f"{folder / AUDIO}: {seconds:.1f} s of audio; this server takes at most "
                                       f"{max_audio_minutes:g} minutes ({max_audio_minutes * 60:g} s) a job")
                syncer = await run_in_threadpool(queue.models.get, job.detector, job.precision)
                await run_in_threadpool(syncer.check, folder / FACE, folder / AUDIO, **options)
            except Wav2LipError as exc:
                raise Wav2LipError(job.plain(str(exc))) from None
            queue.submit(job)
        except TooLarge as exc:
            queue.discard(folder)
            await body.drain()
            return _error(413, str(exc))
        except Wav2LipError as exc:
            queue.discard(folder)
            await body.drain()
            return _error(400, str(exc))
        except QueueFull as exc:
            queue.discard(folder)
            return _error(503, str(exc))
        except ClientDisconnect:
            queue.discard(folder)
            return Response(status_code=400)
        except TooSlow as exc:
            queue.discard(folder)
            return JSONResponse({"detail": str(exc)}, status_code=408, headers={"Connection": "close"})
        except OSError as exc:  # the disk is full (or the folder went away): say so, keep serving
            queue.discard(folder)
            await body.drain()
            return _no_room(exc)
        except BaseException:
            queue.discard(folder)
            raise
        return JSONResponse(job.public(), status_code=201)

    @api.get("", summary="List jobs, newest first")
    def list_jobs() -> list[dict]:
        return [job.public() for job in queue.list()]

    @api.get("/{job_id}", summary="A job's status and progress")
    def get_job(job_id: str) -> dict:
        """`status`: queued, running, done, failed or cancelled; `progress` 0..1; `error` one line or null."""
        return find(job_id).public()

    @api.get("/{job_id}/result", summary="The lip-synced video (range requests supported)",
             response_class=FileResponse, responses={200: {"content": {"video/mp4": {}}}})
    def result(job_id: str):
        job = find(job_id)
        if job.status != "done" or not job.result:
            raise HTTPException(409, f"job {job_id} is {job.status}: no result" +
                                (f" ({job.error})" if job.error else ""))
        path = job.folder / job.result
        stem = Path(job.face_name).stem or "result"
        return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            filename=f"{stem}-wav2lip{path.suffix}", content_disposition_type="inline")

    @api.delete("/{job_id}", summary="Cancel a queued or running job, or delete a finished one",
                responses={200: {"description": "cancelled: the job, now cancelled"},
                           204: {"description": "deleted"}})
    async def delete(job_id: str):
        job = find(job_id)
        if job.status in ("queued", "running"):
            await run_in_threadpool(queue.cancel, job)
            return job.public()
        queue.delete(job)
        return Response(status_code=204)

    app.include_router(api)

    @app.get("/api/health", tags=["server"], summary="Is the server up, and what does it run")
    def health() -> dict:
        models = queue.models
        return {
            "status": "ok", "version": __version__, "checkpoint": models.checkpoint_name,
            "detector": models.detector, "precision": models.precision, "device": str(models.default.device),
            "detectors": list(DETECTORS), "precisions": list(PRECISIONS), "options": [opt.name for opt in options_for(JOBS)],
            "models": [f"{detector}/{precision}" for detector, precision in models.loaded],
            "workers": queue.workers, "max_queued": queue.max_queued, "max_upload": max_upload, "uploading": uploading,
            "max_live": max_live, "live": len(app.state.live_sessions),
            "token_required": token is not None, "jobs": queue.counts(),
        }

    @app.get("/api/options", tags=["server"], summary="Every option of a job and of a live session")
    def options() -> dict:
        """From the option table: name, type, default, choices, unit, range, label, help and group of each
        option a job (`jobs`) or a live session (`live`) takes; the pages build their controls from it.
        `server` gives the models this server loaded (a job's default detector and precision)."""
        models = queue.models
        return {"jobs": public_table(JOBS), "live": public_table("live_socket"),
                "server": {"detector": models.detector, "precision": models.precision,
                           "speaker_model": models.speaker_model_name}}

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The API read from /openapi.json by a small script of ours: FastAPI's Swagger UI comes from a
        CDN, and this must work offline."""
        return HTMLResponse((STATIC / "docs.html").read_text(encoding="utf-8"))

    register_live(app, queue, token, max_upload, max_live)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(HostGuard, host=host, allow=allow_hosts)
    return app


class TooSlow(Exception):
    """The body stopped coming, or comes slower than UPLOAD_RATE after UPLOAD_GRACE_S."""


class _Body:
    """The request body as chunks, remembering whether the client has sent all of it; each byte b must
    come by UPLOAD_GRACE_S + b / UPLOAD_RATE after the request, or TooSlow (408): a client that stalls
    or trickles cannot hold one of the --max-queue upload places for ever."""

    def __init__(self, request: Request) -> None:
        self.request, self.more = request, True
        self.began, self.received = time.monotonic(), 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.more:
            due = self.began + UPLOAD_GRACE_S + self.received / UPLOAD_RATE
            try:
                message = await asyncio.wait_for(self.request.receive(), max(due - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise TooSlow(f"the upload came too slowly ({self.received} bytes in "
                              f"{time.monotonic() - self.began:.0f} s; the server waits {UPLOAD_GRACE_S:g} s plus "
                              f"1 s per {UPLOAD_RATE // 2**10} KiB)") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            self.more = message.get("more_body", False)
            self.received += len(message.get("body", b""))
            if message.get("body"):
                yield message["body"]

    async def drain(self) -> None:
        """Read and drop what is left of a refused body, up to a bound, so the client gets the answer
        instead of a broken pipe."""
        read = 0
        with contextlib.suppress(ClientDisconnect, TooSlow):
            async for chunk in self.chunks():
                read += len(chunk)
                if read > DRAIN_BYTES:
                    return
