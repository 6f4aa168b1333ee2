"""The job request: a multipart body streamed to disk under a size limit, and its option fields parsed
by the option table (the CLI's names, its checks) into `SyncOptions` arguments and the model choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import Wav2LipError
from ..lipsync.options import json_schema, options_for, parse_fields
from .jobs import AUDIO, FACE, sanitize_name

FILES = (FACE, AUDIO)
JOBS = "jobs"  # the option table's surface for the job form
_MAX_FIELDS = 64
CLIENT_ENHANCERS = ("none", "gfpgan", "self")  # the names a client may give; no paths on the server
_MAX_FIELD_BYTES = 1024
_MAX_NAME = 64  # longer than any option's name


class TooLarge(Exception):
    """The body is larger than the server accepts."""


def request_schema() -> dict:
    """The multipart body as an OpenAPI schema, built from the option table's "jobs" surface."""
    properties = {
        FACE: {"type": "string", "format": "binary", "description": "video or image with the face"},
        AUDIO: {"type": "string", "format": "binary", "description": "speech: any audio or video file"},
    }
    for opt in options_for(JOBS):
        properties[opt.name] = json_schema(opt)
    return {"type": "object", "required": list(FILES), "properties": properties}


def parse_options(fields: dict[str, str], surface: str = JOBS) -> tuple[dict, str | None, str | None]:
    """Form fields -> (SyncOptions keyword arguments, detector, precision); Wav2LipError on a bad one."""
    for name, value in fields.items():  # what is echoed back in an error stays one short line
        if len(name) > _MAX_NAME:
            raise Wav2LipError(f"unknown option {name[:40]!r}... ({len(name)} characters)")
        if len(value.encode()) > _MAX_FIELD_BYTES:
            raise Wav2LipError(f"form field {name!r} is longer than {_MAX_FIELD_BYTES} bytes")
    run, models = parse_fields(fields, surface)
    return run, models.get("detector"), models.get("precision")


def parse_client_options(fields: dict[str, str], surface: str = JOBS) -> tuple[dict, str | None, str | None]:
    """`parse_options` for a remote client, who names enhancers, never files: a path would have the server
    read its own files as weights."""
    enhance = fields.get("enhance", "none").strip()
    if enhance not in CLIENT_ENHANCERS:
        raise Wav2LipError(f"enhance={enhance[:80]!r}: this server takes one of {', '.join(CLIENT_ENHANCERS)}")
    return parse_options(fields, surface)


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
            errors.append(f"{name[:40]!r} is given twice")
        elif b"filename" in params or name in FILES:
            if name not in FILES:
                errors.append(f"unexpected file {name[:40]!r} (send only face and audio files)")
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
            except OSError:  # writing the part failed (a full disk): the server's trouble, not the body's
                raise
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
