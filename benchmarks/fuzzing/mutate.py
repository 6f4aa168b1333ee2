"""Mutators: each takes a seed's bytes and a seeded RNG and returns the bytes of a mutant.

Besides blind ones (bit flips, byte runs, truncation, splicing) they know just enough of each format to hit
its structure: the boundaries of MP4 boxes, RIFF/PNG chunks, JPEG segments, Ogg pages, zip entries and text
lines (truncation and duplication there), and the header fields that size things (box and chunk sizes,
frame counts, time bases, sample rates, dimensions), set to 0, the maximum, a negative value or a huge one.
A mutant is recorded as edits (offset, cut, insert) against its seed, so a failing case can be minimised
and saved small.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

Rng = np.random.Generator


@dataclass(frozen=True)
class Edit:
    """Replace `cut` bytes at `offset` with `insert`: one step from a seed towards a mutant."""

    offset: int
    cut: int
    insert: bytes

    def apply(self, data: bytes) -> bytes:
        offset = min(self.offset, len(data))
        return data[:offset] + self.insert + data[offset + self.cut:]


def diff(before: bytes, after: bytes) -> Edit:
    """The one edit that turns `before` into `after` (common prefix and suffix kept)."""
    prefix = 0
    limit = min(len(before), len(after))
    while prefix < limit and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and before[-1 - suffix] == after[-1 - suffix]:
        suffix += 1
    return Edit(prefix, len(before) - prefix - suffix, after[prefix:len(after) - suffix])


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    for edit in edits:
        data = edit.apply(data)
    return data


# --- formats: where the structure is -------------------------------------------------------------------

def kind_of(data: bytes) -> str:
    """The structure the mutators look for, from the content (extensions lie)."""
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return "mp4"
    if data[:4] == b"RIFF":
        return "riff"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "ebml"
    if data[:4] == b"PK\x03\x04":
        return "zip"
    if data[:6] == b"\x93NUMPY":
        return "npy"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    return "text" if _mostly_text(data) else "binary"


def _mostly_text(data: bytes) -> bool:
    head = data[:4096]
    return bool(head) and sum(32 <= b < 127 or b in (9, 10, 13) for b in head) > 0.95 * len(head)


# MP4 boxes whose payload is more boxes (after `skip` bytes of their own).
_MP4_CONTAINERS = {b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"stbl": 0, b"dinf": 0, b"edts": 0,
                   b"udta": 0, b"mvex": 0, b"moof": 0, b"traf": 0, b"stsd": 8, b"avc1": 78, b"mp4a": 28}
# Sized fields inside full boxes: (box, offset from the box start, width in bytes, name).
_MP4_FIELDS = [(b"mvhd", 20, 4, "movie timescale"), (b"mvhd", 24, 4, "movie duration"),
               (b"mdhd", 20, 4, "media timescale"), (b"mdhd", 24, 4, "media duration"),
               (b"tkhd", 28, 4, "track duration"), (b"tkhd", 84, 4, "track width"), (b"tkhd", 88, 4, "track height"),
               (b"stsz", 16, 4, "sample count"), (b"stsz", 12, 4, "sample size"), (b"stts", 12, 4, "stts entries"),
               (b"stts", 16, 4, "stts sample count"), (b"stts", 20, 4, "stts sample delta"),
               (b"stsc", 12, 4, "stsc entries"), (b"stco", 12, 4, "chunk offsets"), (b"stco", 16, 4, "chunk offset"),
               (b"stss", 12, 4, "sync samples"), (b"elst", 12, 4, "edit entries"), (b"ctts", 12, 4, "ctts entries"),
               (b"avc1", 32, 2, "coded width"), (b"avc1", 34, 2, "coded height"),
               (b"mp4a", 24, 2, "channels"), (b"mp4a", 26, 2, "sample bits"), (b"mp4a", 32, 2, "sample rate")]


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[int, int, bytes]]:
    """(offset, size, type) of every box, depth first."""
    end = len(data) if end is None else end
    boxes, pos = [], start
    while pos + 8 <= end and depth < 8:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1 and pos + 16 <= end:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = end - pos
        if size < 8 or pos + size > end:
            break
        boxes.append((pos, size, kind))
        if kind in _MP4_CONTAINERS:
            boxes += _mp4_boxes(data, pos + 8 + _MP4_CONTAINERS[kind], pos + size, depth + 1)
        pos += size
    return boxes


def _riff_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind, size = struct.unpack("<4sI", data[pos:pos + 8])
        chunks.append((pos, size + 8 + (size & 1), kind))
        if kind == b"LIST" and pos + 12 <= len(data):
            inner, end = pos + 12, min(len(data), pos + 8 + size)
            while inner + 8 <= end:
                ikind, isize = struct.unpack("<4sI", data[inner:inner + 8])
                chunks.append((inner, isize + 8 + (isize & 1), ikind))
                inner += isize + 8 + (isize & 1)
        pos += size + 8 + (size & 1)
    return chunks


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((pos, size + 12, kind))
        pos += size + 12
    return chunks


def _jpeg_segments(data: bytes) -> list[tuple[int, int, bytes]]:
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the end marker
            segments.append((pos, len(data) - pos, b"SOS"))
            break
        size = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segments.append((pos, size + 2, bytes([marker])))
        pos += size + 2
    return segments


def _zip_headers(data: bytes) -> list[tuple[int, int, bytes]]:
    """Local headers, central directory entries and the end record, by their signatures."""
    found = []
    for signature, kind in ((b"PK\x03\x04", b"local"), (b"PK\x01\x02", b"central"), (b"PK\x05\x06", b"end"),
                            (b"PK\x06\x06", b"end64"), (b"PK\x06\x07", b"locator64")):
        found += [(m.start(), 4, kind) for m in re.finditer(re.escape(signature), data)]
    return sorted(found)


def structures(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, size, name) of the units of `data`'s format; lines for text."""
    kind = kind_of(data)
    if kind == "mp4":
        return _mp4_boxes(data)
    if kind == "riff":
        return _riff_chunks(data)
    if kind == "png":
        return _png_chunks(data)
    if kind == "jpeg":
        return _jpeg_segments(data)
    if kind == "zip":
        return _zip_headers(data)
    if kind == "ogg":
        pages = [m.start() for m in re.finditer(b"OggS", data)] + [len(data)]
        return [(a, b - a, b"page") for a, b in zip(pages, pages[1:])]
    if kind == "npy":
        end = data.find(b"\n") + 1
        return [(0, end, b"header"), (end, len(data) - end, b"array")]
    lines = [0] + [m.end() for m in re.finditer(b"\n", data)]
    return [(a, b - a, b"line") for a, b in zip(lines, lines[1:] + [len(data)]) if b > a]


def fields(data: bytes) -> list[tuple[int, int, str, str]]:
    """(offset, width, byte order, name) of the header integers of `data` that size or time things."""
    kind = kind_of(data)
    found: list[tuple[int, int, str, str]] = []
    if kind == "mp4":
        for pos, size, box in _mp4_boxes(data):
            found.append((pos, 4, ">", f"{box.decode('latin-1')} size"))
            found += [(pos + off, width, ">", name) for b, off, width, name in _MP4_FIELDS
                      if b == box and off + width <= size]
    elif kind == "riff":
        found.append((4, 4, "<", "RIFF size"))
        for pos, size, chunk in _riff_chunks(data):
            found.append((pos + 4, 4, "<", f"{chunk.decode('latin-1')} size"))
            if chunk == b"fmt ":
                found += [(pos + 8 + off, width, "<", name) for off, width, name in
                          ((0, 2, "format"), (2, 2, "channels"), (4, 4, "sample rate"), (8, 4, "byte rate"),
                           (12, 2, "block align"), (14, 2, "bits per sample"))]
            elif chunk == b"avih":
                found += [(pos + 8 + off, 4, "<", name) for off, name in
                          ((0, "frame period"), (16, "total frames"), (24, "streams"), (32, "width"), (36, "height"))]
            elif chunk == b"strh":
                found += [(pos + 8 + off, 4, "<", name) for off, name in
                          ((20, "scale"), (24, "rate"), (32, "length"), (36, "buffer size"))]
    elif kind == "png":
        for pos, _, chunk in _png_chunks(data):
            found.append((pos, 4, ">", f"{chunk.decode('latin-1')} length"))
            if chunk == b"IHDR":
                found += [(pos + 8, 4, ">", "width"), (pos + 12, 4, ">", "height"), (pos + 16, 1, ">", "bit depth"),
                          (pos + 17, 1, ">", "colour type")]
    elif kind == "jpeg":
        for pos, _, marker in _jpeg_segments(data):
            found.append((pos + 2, 2, ">", "segment length"))
            if marker in (b"\xc0", b"\xc1", b"\xc2"):
                found += [(pos + 5, 2, ">", "height"), (pos + 7, 2, ">", "width"), (pos + 9, 1, ">", "components")]
    elif kind == "zip":
        for pos, _, header in _zip_headers(data):
            if header == b"local":
                found += [(pos + off, width, "<", f"local {name}") for off, width, name in
                          ((8, 2, "method"), (18, 4, "compressed size"), (22, 4, "size"), (26, 2, "name length"),
                           (28, 2, "extra length"))]
            elif header == b"central":
                found += [(pos + off, width, "<", f"central {name}") for off, width, name in
                          ((10, 2, "method"), (20, 4, "compressed size"), (24, 4, "size"), (28, 2, "name length"),
                           (30, 2, "extra length"), (42, 4, "local offset"))]
            elif header == b"end":
                found += [(pos + off, width, "<", f"end {name}") for off, width, name in
                          ((8, 2, "entries here"), (10, 2, "entries"), (12, 4, "directory size"),
                           (16, 4, "directory offset"))]
    elif kind == "flac":
        found += [(18, 3, ">", "sample rate and channels"), (21, 4, ">", "total samples")]
    elif kind == "ebml":
        # Matroska elements with a 1-4 byte integer: pixel width/height, channels, timecode scale, track number.
        for element, name in ((b"\xb0", "pixel width"), (b"\xba", "pixel height"), (b"\x9f", "channels"),
                              (b"\x2a\xd7\xb1", "timecode scale"), (b"\xd7", "track number"),
                              (b"\x23\xe3\x83", "default duration")):
            for m in re.finditer(re.escape(element) + b"[\x81-\x84]", data[:65536]):
                width = m.group()[-1] - 0x80
                found.append((m.end(), width, ">", name))
    elif kind in ("ogg", "mp3", "binary"):
        found += [(off, 4, "<", "word") for off in range(0, min(len(data), 512) - 4, 4)]
    return [f for f in found if f[0] + f[1] <= len(data)]


# --- mutators -----------------------------------------------------------------------------------------

def _bit_flips(data: bytes, rng: Rng) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(len(out)))
        out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _byte_run(data: bytes, rng: Rng) -> bytes:
    pos, length = int(rng.integers(len(data))), int(rng.integers(1, 65))
    choice = int(rng.integers(4))
    run = (rng.bytes(length) if choice == 0 else bytes([(0, 0xFF, int(rng.integers(256)))[choice - 1]]) * length)
    return data[:pos] + run + data[pos + length:]


def _insert_run(data: bytes, rng: Rng) -> bytes:
    pos, length = int(rng.integers(len(data) + 1)), int(rng.integers(1, 257))
    return data[:pos] + (rng.bytes(length) if rng.random() < 0.5 else bytes(length)) + data[pos:]


def _delete_range(data: bytes, rng: Rng) -> bytes:
    pos = int(rng.integers(len(data)))
    return data[:pos] + data[pos + int(rng.integers(1, 1 + max(1, len(data) // 8))):]


def _truncate(data: bytes, rng: Rng) -> bytes:
    return data[:int(rng.integers(len(data)))]


def _truncate_at_boundary(data: bytes, rng: Rng) -> bytes:
    units = structures(data)
    if not units:
        return _truncate(data, rng)
    pos, size, _ = units[int(rng.integers(len(units)))]
    cut = pos + (size if rng.random() < 0.5 else 0) + int(rng.integers(-8, 9))
    return data[:max(0, cut)]


def _duplicate_unit(data: bytes, rng: Rng) -> bytes:
    units = structures(data)
    if not units:
        return _insert_run(data, rng)
    pos, size, _ = units[int(rng.integers(len(units)))]
    unit = data[pos:pos + min(size, 4 << 20)]
    where = pos + size if rng.random() < 0.6 else int(rng.integers(len(data) + 1))
    return data[:where] + unit * int(rng.integers(1, 4)) + data[where:]


def _drop_unit(data: bytes, rng: Rng) -> bytes:
    units = structures(data)
    if not units:
        return _delete_range(data, rng)
    pos, size, _ = units[int(rng.integers(len(units)))]
    return data[:pos] + data[pos + size:]


def _swap_units(data: bytes, rng: Rng) -> bytes:
    units = structures(data)
    if len(units) < 2:
        return _bit_flips(data, rng)
    a, b = sorted(rng.choice(len(units), 2, replace=False))
    (pa, sa, _), (pb, sb, _) = units[a], units[b]
    if pa + sa > pb:  # nested: swap the outer one with the end instead
        return data[:pa] + data[pa + sa:] + data[pa:pa + sa]
    return data[:pa] + data[pb:pb + sb] + data[pa + sa:pb] + data[pa:pa + sa] + data[pb + sb:]


def _field_value(old: int, width: int, rng: Rng) -> int:
    top = (1 << (8 * width)) - 1
    choices = [0, top, 1 << (8 * width - 1), top - 1, 1, old + 1, max(0, old - 1), old * 1000, old // 2,
               int(rng.integers(0, top + 1, dtype=np.uint64))]
    return int(choices[int(rng.integers(len(choices)))]) & top


def _set_field(data: bytes, rng: Rng) -> bytes:
    found = fields(data)
    if not found:
        return _byte_run(data, rng)
    pos, width, order, _ = found[int(rng.integers(len(found)))]
    old = int.from_bytes(data[pos:pos + width], "big" if order == ">" else "little")
    new = _field_value(old, width, rng).to_bytes(width, "big" if order == ">" else "little")
    return data[:pos] + new + data[pos + width:]


def _splice(data: bytes, rng: Rng, other: bytes) -> bytes:
    if not other:
        return _truncate(data, rng)
    a, b = sorted(int(x) for x in rng.integers(0, len(other) + 1, 2))
    pos = int(rng.integers(len(data) + 1))
    keep = data[:pos] + other[a:b]
    return keep + (data[pos + (b - a):] if rng.random() < 0.5 else data[pos:])


# Text: malformed UTF-8 and overlong forms, NULs, huge lines, nesting, odd numbers and paths.
_BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80",
             b"\xef\xbb\xbf", b"\x00", b"\r", b"\x1b[2J"]
_TOKENS = [b"0", b"-1", b"1e999", b"-1e999", b"nan", b"inf", b"99999999999999999999999", b"2147483648", b"0.0",
           b"\"\"", b"null", b"true", b"[]", b"{}", b"/dev/zero", b"/dev/null", b"/proc/self/mem", b"/", b".", b"..",
           b"../../../etc/passwd", b"x" * 300, b"a/" * 2000, b"\"", b",", b",,,", b"'", b"\\", b"${HOME}", b"~",
           b"C:\\con", b"%s%n", b"\xe2\x80\xae", b"-", b"--help"]


def _text_token(data: bytes, rng: Rng) -> bytes:
    tokens = list(re.finditer(rb"[^\s,;:=\"'\[\]{}()]+", data))
    token = _TOKENS[int(rng.integers(len(_TOKENS)))]
    if not tokens:
        return data + token
    m = tokens[int(rng.integers(len(tokens)))]
    return data[:m.start()] + token + data[m.end():]


def _text_bad_bytes(data: bytes, rng: Rng) -> bytes:
    pos = int(rng.integers(len(data) + 1))
    return data[:pos] + _BAD_UTF8[int(rng.integers(len(_BAD_UTF8)))] + data[pos:]


def _text_huge_line(data: bytes, rng: Rng) -> bytes:
    pos = int(rng.integers(len(data) + 1))
    size = int(rng.choice([1 << 16, 1 << 20, 8 << 20]))
    filler = [b"a", b",", b"\"", b"[", b"1", b"\xff", b" "][int(rng.integers(7))]
    return data[:pos] + filler * size + data[pos:]


def _text_nesting(data: bytes, rng: Rng) -> bytes:
    pos = int(rng.integers(len(data) + 1))
    depth = int(rng.choice([100, 10_000, 200_000]))
    opener = [b"[", b"{\"a\":", b"a = [", b"(\""][int(rng.integers(4))]
    return data[:pos] + opener * depth + data[pos:]


def _text_lines(data: bytes, rng: Rng) -> bytes:
    lines = data.splitlines(keepends=True)
    if not lines:
        return data + b"\n" * 3
    i = int(rng.integers(len(lines)))
    op = int(rng.integers(4))
    if op == 0:
        lines.insert(i, lines[i] * int(rng.integers(2, 1000)))
    elif op == 1:
        del lines[i]
    elif op == 2:
        lines[i] = lines[i].replace(b",", b"", 1) if b"," in lines[i] else lines[i] + b",extra"
    else:
        lines[i] = lines[i].replace(b"\n", b"\r")
    return b"".join(lines)


# npy: the header is a Python literal that sizes the array.
_NPY_HEADERS = [b"'shape': (1000000000000,)", b"'shape': (4294967296, 4294967296)", b"'shape': (-1,)",
                b"'shape': ()", b"'shape': (0,)", b"'descr': '|O'", b"'descr': '<U999999999'", b"'descr': 'V0'",
                b"'fortran_order': True", b"'shape': (80, 100000000)", b"'descr': '>f8'", b"'shape': (3, 4, 5)"]


def _npy_header(data: bytes, rng: Rng) -> bytes:
    end = data.find(b"\n")
    if end < 0 or not data.startswith(b"\x93NUMPY"):
        return _text_token(data, rng)
    header = data[:end]
    replacement = _NPY_HEADERS[int(rng.integers(len(_NPY_HEADERS)))]
    key = replacement.split(b":")[0]
    new = re.sub(re.escape(key) + rb": [^,}]*(\([^)]*\))?[^,}]*", replacement, header, count=1)
    # keep the header's declared length honest, padding with spaces, so numpy reaches the array
    pad = len(header) - len(new)
    new = new + b" " * pad if pad >= 0 else new
    if data[6:7] == b"\x01" and pad < 0:
        new = new[:8] + struct.pack("<H", len(new) - 9) + new[10:]
    return new + data[end:]


# zip (torch's .pth, numpy's .npz): entries dropped, doubled, renamed, mutated inside, or compressed.
def _zip_entries(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [(info, archive.read(info)) for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return None


def _zip_edit(data: bytes, rng: Rng) -> bytes:
    entries = _zip_entries(data)
    if not entries:
        return _set_field(data, rng)
    i = int(rng.integers(len(entries)))
    info, content = entries[i]
    op = int(rng.integers(7))
    if op == 0:
        del entries[i]
    elif op == 1:
        entries.insert(i, (info, content))
    elif op == 2:
        renamed = [info.filename + "x", "../" + info.filename, info.filename.upper()][int(rng.integers(3))]
        entries[i] = (zipfile.ZipInfo(renamed), content)
    elif op in (3, 4):
        inner = mutate_once(content, rng) if content else rng.bytes(16)
        entries[i] = (info, inner)
    elif op == 5:  # the pickle's storages sized past their data: an allocation claim
        if info.filename.endswith(".pkl"):
            entries[i] = (info, re.sub(rb"K(.)", lambda m: b"J" + struct.pack("<i", 0x7FFFFFF0), content, count=3))
        else:
            entries[i] = (info, content[: len(content) // 3])
    method = zipfile.ZIP_DEFLATED if op == 6 else zipfile.ZIP_STORED  # 6: the same entries, compressed
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", method) as archive:
        warnings.simplefilter("ignore")  # a doubled entry is the point
        for entry, body in entries:
            archive.writestr(zipfile.ZipInfo(entry.filename, entry.date_time), body, compress_type=method)
    return out.getvalue()


Mutator = Callable[[bytes, Rng], bytes]
GENERIC: dict[str, Mutator] = {
    "bit flips": _bit_flips, "byte run": _byte_run, "insert run": _insert_run, "delete range": _delete_range,
    "truncate": _truncate, "truncate at boundary": _truncate_at_boundary, "duplicate unit": _duplicate_unit,
    "drop unit": _drop_unit, "swap units": _swap_units, "header field": _set_field,
}
TEXT: dict[str, Mutator] = {"token": _text_token, "bad bytes": _text_bad_bytes, "huge line": _text_huge_line,
                            "nesting": _text_nesting, "lines": _text_lines}


def mutators_for(data: bytes) -> list[tuple[str, Mutator]]:
    """The mutators for the format of `data`, a format's own ones listed three times (drawn more often)."""
    kind = kind_of(data)
    if kind == "text":
        return [(n, f) for n, f in GENERIC.items() if n not in ("bit flips", "header field", "swap units")] \
            + list(TEXT.items()) * 2
    chosen = list(GENERIC.items())
    if kind == "zip":
        chosen += [("zip edit", _zip_edit)] * 3
    elif kind == "npy":
        chosen += [("npy header", _npy_header)] * 3
    elif fields(data):
        chosen += [("header field", _set_field)] * 2
    return chosen


def mutate_once(data: bytes, rng: Rng) -> bytes:
    if not data:
        return rng.bytes(int(rng.integers(1, 64)))
    table = mutators_for(data)
    return table[int(rng.integers(len(table)))][1](data, rng)


def mutate(data: bytes, rng: Rng, other: bytes = b"", rounds: int | None = None) -> tuple[bytes, list[Edit], list[str]]:
    """A mutant of `data`: 1 to 3 mutations (one may splice in a piece of `other`, a sibling seed);
    returns it, the edits that make it from `data`, and the mutators' names."""
    rounds = int(rng.choice([1, 1, 1, 2, 3])) if rounds is None else rounds
    edits, names, current = [], [], data
    for _ in range(rounds):
        table = mutators_for(current) if current else [("random bytes", lambda _, r: r.bytes(int(r.integers(1, 64))))]
        if other:
            table.append(("splice", lambda d, r: _splice(d, r, other)))
        name, mutator = table[int(rng.integers(len(table)))]
        new = mutator(current, rng)
        edits.append(diff(current, new))
        names.append(name)
        current = new
    return current, edits, names
