"""The Live page's WebSocket: an avatar sent once, then speech streamed in and lip-synced frames streamed
out as `LiveSyncer` makes them.

Why a WebSocket and not WebRTC: the frames are the generator's own (JPEG, no video codec to add delay or
tune), each arrives with the exact samples it plays with, the browser plays both on one Web Audio clock,
and it needs nothing beyond FastAPI and uvicorn's WebSocket support. WebRTC (aiortc, with its codec and
crypto libraries) would buy congestion control, NAT traversal and loss-tolerant UDP for far-away clients.

Protocol at /api/live (JSON text messages, binary messages):
  client: {"type": "start", "avatar": {"name": str, "size": bytes}, "format": "f32le" | "s16le",
           "sample_rate": Hz, "options": {the CLI's option names: blend, loop, pads, box, ...},
           "token": the server's token, when it has one (or the Authorization header)},
          within START_SECONDS of connecting; only a valid one takes one of the --max-live places
  client: the avatar file (a still or a short video) as binary messages of at most 1 MiB, `size` bytes in all,
          each byte b by AVATAR_SECONDS + b / AVATAR_RATE after the start message
  server: {"type": "ready", "width", "height", "fps", "sample_rate": 16000, "avatar_frames"}
  client: audio as binary messages (mono PCM of `format` at `sample_rate`, any length, at any pace);
          {"type": "ack", "index": k} for each frame message received; {"type": "end"} when the audio ends
  server: one binary message per frame: a 4-byte little-endian length, that many bytes of JSON header
          {index, time, sample, mouth, audio: samples, image: bytes, chunk, received, made, sent, dropped},
          `audio` float32 little-endian samples (16 kHz) that play with the frame, then `image` bytes of JPEG
  server: {"type": "end", "frames": n, "dropped": pictures} after the last frame, then a normal close (1000)
  server: {"type": "error", "message": one line} then a close (1008: the client's input, 1013: busy,
          1011: the server's fault)
Timing: `chunk` is the index of the audio message that held the frame's first sample (null for the
avatar's own frames while no audio comes), `received` the server's clock when that message arrived, `made`
when `LiveSyncer` yielded the frame, `sent` when the message was handed to the socket (seconds, one clock,
only differences mean anything). The client's time from sending chunk c to receiving the frame, less
`made - received`, is the latency the web transport adds to `LiveSyncer`'s own.

Flow: audio in blocks (at most IN_SECONDS wait in the server; then it stops reading the socket, so TCP
holds back a client faster than real time); frames out drop (the live source does not wait for a slow
viewer): while WINDOW frame messages are unacknowledged the server sends a frame's sound without its
picture, while HARD_WINDOW are, nothing for the frame. So at most WINDOW pictures and HARD_WINDOW messages
are in flight per session, whatever the client does; acknowledgements bring the pictures back. A disconnect stops the session's threads.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import queue
import shutil
import struct
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import av
import cv2
import numpy as np
from fastapi import FastAPI, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..constants import MIN_SAMPLE_RATE
from ..io.audio import SAMPLE_RATE
from ..errors import Wav2LipError
from ..io.streams import PCM_TYPES
from ..lipsync.live import LiveFrame, LiveSyncer
from ..io.video import probe
from .form import parse_client_options
from .jobs import JobQueue, made_here, make_folder, sanitize_name

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
AVATAR_PIECE = 2**20  # largest binary message of the avatar file
IN_SECONDS = 2.0  # audio buffered between the socket and LiveSyncer before the server stops reading
WINDOW = 25  # frame messages unacknowledged from which on pictures are dropped (1 s at 25 fps)
HARD_WINDOW = 125  # ... from which on whole frames are dropped (5 s at 25 fps)
JPEG_QUALITY = 85
MAX_SESSIONS = 2  # live sessions at once by default (serve --max-live): each is real-time work for the CPU
START_SECONDS = 5.0  # the start message must come this soon after connecting (a silent socket holds nothing long)
AVATAR_SECONDS = 10.0  # after the start message the avatar's bytes may lag this long behind ...
AVATAR_RATE = 256 * 2**10  # ... this many bytes a second (2 Mbit/s): a trickled avatar holds no place for ever
MAX_AVATAR_SECONDS = 120.0  # a video avatar is prepared whole (a face box and crop per frame) before streaming
MAX_SAMPLE_RATE = 192_000
MAX_FLOAT = 16.0  # a float32 sample beyond this is not audio in [-1, 1] (s16 bytes read as float, say)
THREADS = ("wav2lip-live-session", "wav2lip-live-audio", "wav2lip-avatar")  # the threads a session starts
LIVE = "live_socket"  # the option table's surface for a live session
_END = object()


def _as_text(value: object) -> str:
    """A JSON option value as the form's text: lists as numbers apart by spaces, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "" if value is None else str(value)


class ClientError(Exception):
    """Bad input from the client: one line sent over the socket, then the connection is closed."""

    def __init__(self, message: str, code: int = 1008) -> None:
        super().__init__(message)
        self.code = code


def register(app: FastAPI, jobs: JobQueue, token: str | None, max_upload: int,
             max_sessions: int = MAX_SESSIONS) -> None:
    """Add the Live page (/live) and its socket (/api/live) to the app; avatars are kept, while their
    session lasts, in the `live` folder beside the job folders."""
    root = jobs.root.parent / "live"
    for folder in root.iterdir() if root.is_dir() else ():
        if made_here(folder):  # an avatar a stopped server left behind; anything else is the user's
            shutil.rmtree(folder, ignore_errors=True)
    open_sessions: set[Session] = set()

    @app.get("/live", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "live.html").read_text(encoding="utf-8"))

    @app.websocket("/api/live")
    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        await Session(websocket, jobs, root, token, max_upload).run(open_sessions, max_sessions)

    app.state.live_sessions = open_sessions


class Session:
    """One connection: the start message, the avatar, then audio in and frames out until either side ends."""

    def __init__(self, websocket: WebSocket, jobs: JobQueue, root: Path, token: str | None, max_upload: int):
        self.ws, self.jobs, self.token, self.max_upload = websocket, jobs, token, max_upload
        self.folder = root / uuid.uuid4().hex
        self.avatar_name = "avatar"
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.audio: queue.Queue = queue.Queue()
        self.audio_seconds = 0.0  # seconds of audio in self.audio
        self.audio_lock = threading.Lock()
        self.chunks: deque[tuple[int, int, float]] = deque()  # (end sample at 16 kHz, message index, arrival)
        self.chunks_lock = threading.Lock()
        self.in_flight: deque[int] = deque()  # indices of the frame messages sent and not yet acknowledged
        self.made = 0  # frames LiveSyncer yielded
        self.dropped = 0  # frames sent without their picture, or not at all
        self.early: deque[dict] = deque()  # messages that came while the avatar was being prepared

    # ---------------------------------------------------------------- the conversation

    async def run(self, sessions: set[Session], limit: int) -> None:
        """The conversation; a place among `sessions` (at most `limit`) is taken only by a valid start
        message, token included, so sockets that say nothing or hold no token lock nobody out."""
        try:
            start = await self._start()
            if len(sessions) >= limit:
                raise ClientError(f"the server is running {len(sessions)} live sessions already (its limit); "
                                  "try again later", code=1013)
            sessions.add(self)
            await self._receive_avatar(start)
            live = await self._prepare_watching(start["options"])
            await self.ws.send_json({"type": "ready", "width": live.width, "height": live.height, "fps": live.fps,
                                     "sample_rate": SAMPLE_RATE, "avatar_frames": len(live.boxes)})
            await self._stream(live, start["format"], start["sample_rate"])
        except ClientError as exc:
            await self.fail(exc)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("live session failed")
            await self.fail(ClientError("the server failed on this stream (see its log)", code=1011))
        finally:
            self.stop.set()
            if self.thread is not None:
                await run_in_threadpool(self.thread.join)
            if made_here(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)
            sessions.discard(self)

    async def fail(self, error: ClientError) -> None:
        with contextlib.suppress(Exception):
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.send_json({"type": "error", "message": str(error)})
                await self.ws.close(code=error.code)

    async def _message(self) -> dict:
        message = self.early.popleft() if self.early else await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def _start(self) -> dict:
        try:
            message = await asyncio.wait_for(self._message(), START_SECONDS)
        except asyncio.TimeoutError:
            raise ClientError(f"no start message within {START_SECONDS:g} s of connecting") from None
        try:
            start = json.loads(message.get("text") or "")
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            start = None
        if not isinstance(start, dict) or start.get("type") != "start":
            raise ClientError('the first message must be the JSON start message ({"type": "start", ...})')
        if self.token is not None:
            given = str(start.get("token") or "")
            header = self.ws.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                given = given or header[7:]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise ClientError("this server needs its token: send it as \"token\" in the start message")
        avatar = start.get("avatar")
        if not isinstance(avatar, dict) or not isinstance(avatar.get("size"), int) or avatar["size"] < 0:
            raise ClientError('the start message needs "avatar": {"name": ..., "size": bytes}')
        if avatar["size"] == 0:
            raise ClientError(f"{sanitize_name(str(avatar.get('name') or ''), 'avatar')}: file is empty (0 bytes)")
        if avatar["size"] > self.max_upload:
            raise ClientError(f"the avatar is larger than the server's limit of {self.max_upload / 2**20:g} MiB")
        self.avatar_name = sanitize_name(str(avatar.get("name") or ""), "avatar")
        fmt = start.get("format", "f32le")
        if not isinstance(fmt, str) or fmt not in PCM_TYPES:
            raise ClientError(f"unknown audio format {str(fmt)[:40]!r} (one of {', '.join(PCM_TYPES)}: "
                              "raw mono PCM, little-endian)")
        rate = start.get("sample_rate", SAMPLE_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise ClientError(f"sample_rate must be a whole number of Hz in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}, "
                              f"got {rate!r:.40}")
        options = start.get("options") or {}
        if not isinstance(options, dict):
            raise ClientError('"options" must be an object of option names and values')
        try:
            values, detector, precision = parse_client_options({str(k): _as_text(v) for k, v in options.items()}, LIVE)
            detector, precision = self.jobs.models.key(detector, precision)
        except Wav2LipError as exc:
            raise ClientError(str(exc)) from None
        return {"size": avatar["size"], "format": fmt, "sample_rate": rate,
                "options": (values, detector, precision)}

    async def _receive_avatar(self, start: dict) -> None:
        """The avatar's bytes, which must keep coming at AVATAR_RATE after a grace of AVATAR_SECONDS:
        a client that trickles them is closed instead of holding one of the few places."""
        make_folder(self.folder)
        size, got = start["size"], 0
        began = time.monotonic()
        with open(self.folder / "face", "wb") as f:
            while got < size:
                due = began + AVATAR_SECONDS + got / AVATAR_RATE
                try:
                    message = await asyncio.wait_for(self._message(), max(due - time.monotonic(), 0.0))
                except asyncio.TimeoutError:
                    raise ClientError(f"the avatar came too slowly ({got} of {size} bytes after "
                                      f"{time.monotonic() - began:.0f} s; the server waits {AVATAR_SECONDS:g} s "
                                      f"plus 1 s per {AVATAR_RATE // 2**10} KiB)") from None
                data = message.get("bytes")
                if data is None:
                    raise ClientError(f"expected the avatar file's bytes ({size - got} more), got a text message")
                if len(data) > AVATAR_PIECE or got + len(data) > size:
                    raise ClientError(f"the avatar's binary messages must add up to its size ({size} bytes), "
                                      f"at most {AVATAR_PIECE} bytes each")
                f.write(data)
                got += len(data)

    def _plain(self, message: str) -> str:
        return message.replace(str(self.folder / "face"), self.avatar_name).replace(str(self.folder), "live")

    async def _prepare_watching(self, options: tuple[dict, str, str]) -> LiveSyncer:
        """The avatar prepared in a worker thread while the socket is read: a client that leaves stops the
        preparation at once and frees its place; what it sends meanwhile is kept for `_message`."""
        cancel = threading.Event()
        work = asyncio.ensure_future(run_in_threadpool(self._prepare, options, cancel))
        try:
            while True:
                read = asyncio.ensure_future(self.ws.receive())
                done, _ = await asyncio.wait({work, read}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    return work.result()
                message = read.result()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                self.early.append(message)
        finally:
            if not work.done():
                cancel.set()
                with contextlib.suppress(BaseException):
                    await work

    def _prepare(self, options: tuple[dict, str, str], cancel: threading.Event) -> LiveSyncer:
        values, detector, precision = options
        try:
            face = self.folder / "face"
            info = probe(face)
            limit = f"a live avatar is prepared whole, so it may last {MAX_AVATAR_SECONDS:g} s at most (it loops)"
            if not info.is_still and (info.duration or 0) > MAX_AVATAR_SECONDS:
                raise Wav2LipError(f"{face}: a {info.duration:.0f} s video; {limit}")
            if not info.is_still and not info.duration and _longer_than(face, MAX_AVATAR_SECONDS, info.fps):
                raise Wav2LipError(f"{face}: a video longer than {MAX_AVATAR_SECONDS:g} s; {limit}")
            syncer = self.jobs.models.get(detector, precision)
            return LiveSyncer(self.folder / "face", syncer=syncer, cancel=cancel, **values)
        except Wav2LipError as exc:
            raise ClientError(self._plain(str(exc))) from None

    # ---------------------------------------------------------------- streaming

    async def _stream(self, live: LiveSyncer, fmt: str, rate: int) -> None:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()

        def post(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the connection ended
                loop.call_soon_threadsafe(out.put_nowait, item)

        self.thread = threading.Thread(target=self._work, args=(live, rate, post), name=THREADS[0], daemon=True)
        self.thread.start()
        receiver = asyncio.ensure_future(self._receive_audio(np.dtype(PCM_TYPES[fmt]), rate))
        sender = asyncio.ensure_future(self._send(out))
        try:
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stop.set()
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        if sender in done and sender.result() is not None:
            raise sender.result()

    async def _receive_audio(self, dtype: np.dtype, rate: int) -> None:
        """Audio messages -> the reader's queue (waiting while it holds IN_SECONDS), acks, the end."""
        index = samples = 0
        ended = False
        while True:
            message = await self._message()
            now = time.perf_counter()
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if ended:
                    raise ClientError("audio after the end message")
                if len(data) % dtype.itemsize:
                    raise ClientError(f"audio message {index} has {len(data)} bytes, not a whole number of "
                                      f"{dtype.itemsize}-byte samples ({'f32le' if dtype.kind == 'f' else 's16le'})")
                x = np.frombuffer(data, dtype=dtype).astype(np.float32)
                if dtype.kind == "i":
                    x /= 32768.0
                elif x.size and not (np.isfinite(x).all() and float(np.abs(x).max()) <= MAX_FLOAT):
                    raise ClientError(f"audio message {index} is not f32le audio in [-1, 1] (it holds values like "
                                      f"{float(x[np.argmax(~np.isfinite(x) | (np.abs(x) > MAX_FLOAT))]):.3g}); "
                                      "is it s16le?")
                samples += x.size
                with self.chunks_lock:
                    self.chunks.append((round(samples * SAMPLE_RATE / rate), index, now))
                index += 1
                while self.audio_seconds > IN_SECONDS and not self.stop.is_set():
                    await asyncio.sleep(0.01)  # the socket is not read meanwhile: TCP holds the client back
                with self.audio_lock:
                    self.audio_seconds += x.size / rate
                self.audio.put((x, x.size / rate, now))
                continue
            try:
                control = json.loads(text or "")
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                control = None
            kind = control.get("type") if isinstance(control, dict) else None
            if kind == "ack" and isinstance(control.get("index"), int):
                while self.in_flight and self.in_flight[0] <= control["index"]:
                    self.in_flight.popleft()
            elif kind == "end" and not ended:
                ended = True
                self.audio.put(None)
            else:
                raise ClientError(f"unexpected message {(text or '')[:60]!r} (expected audio bytes, "
                                  '{"type": "ack", "index": k} or {"type": "end"})')

    def _chunks(self):
        """The audio queue as `LiveSyncer.stream`'s chunk source (its reader thread runs this)."""
        while not self.stop.is_set():
            try:
                item = self.audio.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            chunk, seconds, arrived = item
            with self.audio_lock:
                self.audio_seconds -= seconds
            yield chunk, arrived  # LiveSyncer's max_delay counts from the arrival, the buffer's wait included

    def _chunk_of(self, sample: int | None) -> tuple[int | None, float | None]:
        """The audio message that held this 16 kHz sample, and when it arrived."""
        if sample is None:
            return None, None
        with self.chunks_lock:
            while self.chunks and self.chunks[0][0] <= sample:
                self.chunks.popleft()
            if not self.chunks:
                return None, None
            _, index, arrived = self.chunks[0]
            return index, arrived

    def _work(self, live: LiveSyncer, rate: int, post) -> None:
        """The session's thread: LiveSyncer's frames -> JPEG -> the sender, until the stream or the session ends."""
        frames = live.stream(self._chunks(), sample_rate=rate)
        try:
            for frame in frames:
                if self.stop.is_set():
                    return
                packed = self._pack(frame)
                if packed is not None:  # a frame dropped whole takes no room in the sender's queue
                    post(packed)
            post(_END)
        except Wav2LipError as exc:
            post(ClientError(str(exc)))
        except Exception:
            log.exception("live stream failed")
            post(ClientError("the server failed on this stream (see its log)", code=1011))
        finally:
            frames.close()

    def _pack(self, frame: LiveFrame) -> tuple[dict, bytes, bytes] | None:
        made = time.perf_counter()
        self.made += 1
        unacked = len(self.in_flight)
        if unacked >= HARD_WINDOW:
            self.dropped += 1
            return None
        image = b""
        if unacked >= WINDOW:
            self.dropped += 1
        else:
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            image = jpeg.tobytes() if ok else b""
        chunk, received = self._chunk_of(frame.sample)
        audio = np.ascontiguousarray(frame.audio, dtype="<f4").tobytes()
        header = {"index": frame.index, "time": frame.time, "sample": frame.sample, "mouth": frame.mouth,
                  "audio": frame.audio.size, "image": len(image), "chunk": chunk, "received": received,
                  "made": made, "dropped": self.dropped}
        self.in_flight.append(frame.index)
        return header, audio, image

    async def _send(self, out: asyncio.Queue) -> ClientError | None:
        """Frame messages to the client until the stream ends (the end message and a normal close) or fails."""
        while True:
            item = await out.get()
            if item is _END:
                await self.ws.send_json({"type": "end", "frames": self.made, "dropped": self.dropped})
                await self.ws.close(1000)
                return None
            if isinstance(item, ClientError):
                return item
            header, audio, image = item
            header["sent"] = time.perf_counter()
            head = json.dumps(header, separators=(",", ":")).encode()
            await self.ws.send_bytes(b"".join((struct.pack("<I", len(head)), head, audio, image)))


def _longer_than(path: Path, seconds: float, fps: float) -> bool:
    """Whether a video that declares no duration has more than `seconds` of frames at `fps`, counted from
    its packets (read, not decoded) up to that point: the length its header does not give."""
    packets = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:  # tags that are not UTF-8
            for packet in container.demux(container.streams.video[0]):
                packets += packet.size > 0
                if packets > seconds * fps:
                    return True
    except av.error.FFmpegError:  # damaged past this point: the preparation stops there and says so
        pass
    return False


def live_threads() -> list[threading.Thread]:
    """The live sessions' threads still running (for tests and the health check)."""
    return [t for t in threading.enumerate() if t.name in THREADS]


