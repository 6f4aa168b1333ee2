"""The job request: a multipart body streamed to disk under a size limit, and its option fields parsed
with the CLI's names into `SyncOptions` arguments (checked by `SyncOptions.check`, as the CLI's are).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import Wav2LipError
from ..lipsync.options import (BLEND_MODES, DETECTORS, ENHANCERS, LOOP_MODES, MASK_KINDS, PRECISIONS, SILENCE_MODES,
                       SMOOTH_MODES, SPEAKER_MODES, X264_PRESETS)
from ..lipsync.offline import SyncOptions
from .jobs import AUDIO, FACE, sanitize_name

FILES = (FACE, AUDIO)
_MAX_FIELDS = 64
_MAX_FIELD_BYTES = 1024


class TooLarge(Exception):
    """The body is larger than the server accepts."""


def _four(text: str) -> tuple[int, int, int, int]:
    parts = text.replace(",", " ").split()
    if len(parts) != 4:
        raise ValueError("expected 4 integers: top bottom left right")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _point(text: str) -> tuple[float, float]:
    parts = text.replace(",", " ").split()
    if len(parts) != 2:
        raise ValueError("expected 2 numbers: x y")
    return float(parts[0]), float(parts[1])


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


# Form field -> (parser, JSON schema, help). Names are the CLI's options (dashes as underscores; a
# dashed spelling is accepted too). Value checks beyond the type are SyncOptions.check's.
OPTIONS: dict[str, tuple[Callable[[str], object], dict, str]] = {
    "blend": (str.strip, {"type": "string", "enum": list(BLEND_MODES)}, "paste (the reference's) or feather"),
    "loop": (str.strip, {"type": "string", "enum": list(LOOP_MODES)}, "a video shorter than the audio"),
    "pads": (_four, {"type": "string", "example": "0 10 0 0"}, "widen the detected box: top bottom left right"),
    "box": (_four, {"type": "string", "example": "150 470 140 380"},
            "fixed face box for every frame: top bottom left right (no detection)"),
    "smooth": (str.strip, {"type": "string", "enum": list(SMOOTH_MODES)}, "box smoothing"),
    "detect_every": (int, {"type": "integer"}, "full-frame detection every N frames, tracking in between"),
    "static": (_bool, {"type": "boolean"}, "use only the first frame of the video"),
    "fps": (float, {"type": "number"}, "frame rate for a still image; for a video, resample to this rate"),
    "resize_factor": (int, {"type": "integer"}, "divide the video's width and height by N first"),
    "crop": (_four, {"type": "string", "example": "0 -1 0 -1"}, "crop after resizing: top bottom left right"),
    "rotate": (_bool, {"type": "boolean"}, "turn video frames 90 degrees clockwise"),
    "batch_size": (int, {"type": "integer"}, "generator batch size"),
    "lossless": (_bool, {"type": "boolean"}, "FFV1 RGB in Matroska (the result is .mkv)"),
    "crf": (int, {"type": "integer"}, "x264 quality: lower is better (default 18)"),
    "preset": (str.strip, {"type": "string", "enum": list(X264_PRESETS)}, "x264 preset"),
    "no_cache": (_bool, {"type": "boolean"}, "do not reuse or store this video's face boxes"),
    "detector": (str.strip, {"type": "string", "enum": list(DETECTORS)}, "face detector (default: the server's)"),
    "precision": (str.strip, {"type": "string", "enum": list(PRECISIONS)}, "generator arithmetic"),
    "silence": (str.strip, {"type": "string", "enum": list(SILENCE_MODES)},
                "where nobody speaks: still (closed, still mouth), original (the source frames), off (lip-sync "
                "whatever sound is there)"),
    "crossfade": (int, {"type": "integer"}, f"frames of crossfade at each edge of a pause (default {SyncOptions.crossfade})"),
    "speaker": (str.strip, {"type": "string", "enum": list(SPEAKER_MODES)},
                "with several faces: auto (the one whose lips match the video's own sound, given a speaker "
                "model; else the largest) or largest"),
    "face_index": (int, {"type": "integer"}, "follow the I-th face from the left (0: leftmost)"),
    "face_at": (_point, {"type": "string", "example": "320 180"}, "follow the face nearest x y (pixels)"),
    "mask": (str.strip, {"type": "string", "enum": list(MASK_KINDS)},
             "feather mask: ellipse (fixed in the box) or landmarks (mouth and jaw from RetinaFace)"),
    "mask_top": (float, {"type": "number"},
                 f"feather mask: where it starts, fraction of the box height (default {SyncOptions.mask_top:.2f})"),
    "mask_softness": (float, {"type": "number"},
                      f"feather mask: fraction of its radius over which it fades (default {SyncOptions.mask_softness:g})"),
    "no_colour_match": (_bool, {"type": "boolean"}, "feather: keep the generated colours (no colour matching)"),
    "enhance": (str.strip, {"type": "string", "enum": list(ENHANCERS)},
                "gfpgan: restore the painted mouth with GFPGAN v1.4 (slow on a CPU)"),
    "enhance_strength": (float, {"type": "number"}, "0..1: mix of restored and plain mouth (default 1)"),
}


def request_schema() -> dict:
    """The multipart body as an OpenAPI schema, built from `OPTIONS`."""
    properties = {
        FACE: {"type": "string", "format": "binary", "description": "video or image with the face"},
        AUDIO: {"type": "string", "format": "binary", "description": "speech: any audio or video file"},
    }
    for name, (_, schema, text) in OPTIONS.items():
        properties[name] = {**schema, "description": text}
    return {"type": "object", "required": list(FILES), "properties": properties}


def parse_options(fields: dict[str, str]) -> tuple[dict, str | None, str | None]:
    """Form fields -> (SyncOptions keyword arguments, detector, precision); Wav2LipError on a bad one."""
    values: dict[str, object] = {}
    for raw, text in fields.items():
        name = raw.replace("-", "_")
        if name not in OPTIONS:
            raise Wav2LipError(f"unknown option {raw!r} (known: {', '.join(OPTIONS)})")
        parser = OPTIONS[name][0]
        try:
            values[name] = parser(text)
        except ValueError as exc:
            raise Wav2LipError(f"{raw}={text!r}: {exc}") from None
    detector = values.pop("detector", None) or None
    precision = values.pop("precision", None) or None
    if "no_cache" in values:
        values["cache"] = not values.pop("no_cache")
    if "no_colour_match" in values:
        values["colour_match"] = not values.pop("no_colour_match")
    SyncOptions.from_kwargs(values)
    return values, detector, precision  # type: ignore[return-value]


@dataclass
class Upload:
    """What the body held: the file parts written into the folder, the other fields as text."""

    names: dict[str, str] = field(default_factory=dict)  # part name -> the client's file name (sanitized)
    fields: dict[str, str] = field(default_factory=dict)
    size: int = 0


async def receive(chunks: AsyncIterator[bytes], boundary: bytes, folder: Path, limit: int) -> Upload:
    """Stream a multipart body into `folder`: the `face` and `audio` parts to files of those names
    (whatever the client called them), the rest as fields. TooLarge past `limit` bytes; Wav2LipError
    for a malformed body."""
    upload = Upload()
    state: dict = {"headers": {}, "name": None, "file": None, "value": None, "header": b"", "field": b""}
    errors: list[str] = []

    def on_part_begin() -> None:
        state.update(headers={}, name=None, file=None, value=None, field=b"", header=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["header"]
        state["field"], state["header"] = b"", b""

    def on_headers_finished() -> None:
        disposition, params = parse_options_header(state["headers"].get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if disposition != b"form-data" or not name:
            errors.append("a part of the body has no form-data name")
        elif name in upload.names or name in upload.fields:
            errors.append(f"{name!r} is given twice")
        elif b"filename" in params or name in FILES:
            if name not in FILES:
                errors.append(f"unexpected file {name!r} (send only face and audio files)")
                return
            client_name = params.get(b"filename", b"").decode("utf-8", "replace")
            upload.names[name] = sanitize_name(client_name, name)
            state["file"] = open(folder / name, "wb")
        elif len(upload.fields) >= _MAX_FIELDS:
            errors.append("too many form fields")
        else:
            state["value"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["file"] is not None:
            state["file"].write(data[start:end])
        elif state["value"] is not None:
            state["value"] += data[start:end]
            if len(state["value"]) > _MAX_FIELD_BYTES:
                errors.append(f"form field {state['name']!r} is longer than {_MAX_FIELD_BYTES} bytes")
                state["value"] = None

    def on_part_end() -> None:
        if state["file"] is not None:
            state["file"].close()
            state["file"] = None
        elif state["value"] is not None:
            upload.fields[state["name"]] = state["value"].decode("utf-8", "replace")
            state["value"] = None

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        async for chunk in chunks:
            upload.size += len(chunk)
            if upload.size > limit:
                raise TooLarge(f"the upload is larger than the server's limit of {limit / 2**20:g} MiB")
            try:
                parser.write(chunk)
            except Exception as exc:  # python-multipart's parse errors: a malformed body
                raise Wav2LipError(f"malformed multipart body ({exc})") from None
            if errors:
                raise Wav2LipError(errors[0])
        parser.finalize()
    finally:
        if state["file"] is not None:
            state["file"].close()
    for name in FILES:
        if name not in upload.names:
            raise Wav2LipError(f"no {name} file in the request (send multipart fields face and audio)")
    return upload


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Wav2LipError("send multipart/form-data with a face file and an audio file")
    return boundary
