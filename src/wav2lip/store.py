"""The model store: one table of known weight files, a cache folder, fetch-and-verify.

A known name ("wav2lip_gan.pth") is looked up in the cache and downloaded on first use; a path to
an existing file is always accepted as is, so nothing here stands between a user and their own file
(a file in the current folder that bears a known name is taken for it only if it is that file: `./name`
says "this file"). Downloads come over https only (a mirror may also be a local folder, or http on this
machine), stream into `<file>.part`, resume with an HTTP Range request, are checked against the size and
SHA-256 in the table, and only then renamed into place.
"""
from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from tqdm import tqdm

from .errors import Wav2LipError

_AUTHORS_PAGE = "https://github.com/Rudrabha/Wav2Lip#getting-the-weights"
_CAMENDURU = "https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints"
_JUSTINJOHN = "https://github.com/justinjohn0306/Wav2Lip/releases/download/models"
_GFPGAN = "https://github.com/TencentARC/GFPGAN"

_CHUNK = 1 << 20
_TIMEOUT_S = 30


@dataclass(frozen=True)
class WeightFile:
    """One known file: where to download it, how to recognise it, which network it holds."""

    name: str  # file name in the cache
    kind: str  # the `kind` argument of checkpoints.load_model
    urls: tuple[str, ...]  # tried in order
    size: int | None  # bytes, where known
    sha256: str | None  # hex digest, where known
    description: str
    homepage: str  # where a person can get the file by hand


KNOWN: dict[str, WeightFile] = {
    f.name: f
    for f in (
        WeightFile(
            "wav2lip_gan.pth", "wav2lip",
            (f"{_CAMENDURU}/wav2lip_gan.pth", f"{_JUSTINJOHN}/wav2lip_gan.pth"),
            435_801_865, "ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
            "Wav2Lip generator trained with the visual quality GAN (sharper; the usual choice)",
            _AUTHORS_PAGE,
        ),
        WeightFile(
            "wav2lip.pth", "wav2lip",
            (f"{_CAMENDURU}/wav2lip.pth", f"{_JUSTINJOHN}/wav2lip.pth"),
            435_807_851, "b78b681b68ad9fe6c6fb1debc6ff43ad05834a8af8a62ffc4167b7b34ef63c37",
            "Wav2Lip generator without the GAN (most accurate lip shapes, blurrier)",
            _AUTHORS_PAGE,
        ),
        WeightFile(
            "lipsync_expert.pth", "syncnet",
            (f"{_CAMENDURU}/lipsync_expert.pth",),
            None, "9b9936c721696446eeed353032cab242a8cf0eed8c46cde540366f6ae5493be5",
            "SyncNet lip-sync expert, the frozen judge for training the generator",
            _AUTHORS_PAGE,
        ),
        WeightFile(
            "visual_quality_disc.pth", "discriminator",
            (f"{_CAMENDURU}/visual_quality_disc.pth",),
            None, "b3f8f6f7e954af02f2ffe0f3ea11f3259af89bff6e70933001c7c6bc8c145d96",
            "visual quality discriminator of the GAN (only needed to resume GAN training)",
            _AUTHORS_PAGE,
        ),
        WeightFile(
            # Published as s3fd-619a316812.pth: torch-hub names carry the digest's first hex digits.
            "s3fd.pth", "s3fd",
            (
                "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
                f"{_CAMENDURU}/s3fd-619a316812.pth",
            ),
            89_843_225, "619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
            "S3FD face detector used by the reference pipeline",
            "https://github.com/1adrianb/face-alignment",
        ),
        WeightFile(
            # Published as mobilenet0.25_Final.pth by the RetinaFace PyTorch project.
            "retinaface_mobilenet0.25.pth", "retinaface",
            (
                "https://github.com/elliottzheng/face-detection/releases/download/0.0.1/mobilenet0.25_Final.pth",
                "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
            ),
            1_789_735, "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
            "RetinaFace mobilenet0.25, a small fast face detector",
            "https://github.com/biubug6/Pytorch_Retinaface",
        ),
        WeightFile(
            "syncnet_v2.model", "syncnet_v2",
            ("https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",),
            54_573_114, "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
            "SyncNet v2 of the Oxford VGG group, the LSE-D / LSE-C evaluator",
            "https://www.robots.ox.ac.uk/~vgg/software/lipsync/",
        ),
        WeightFile(
            # A release asset of tag v1.3.0 (spec/GFPGAN.md section 1). Size and SHA-256 as several
            # independent downloaders record them; not checked here (no network on this machine).
            "GFPGANv1.4.pth", "gfpgan",
            (f"{_GFPGAN}/releases/download/v1.3.0/GFPGANv1.4.pth",),
            348_632_874, "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            "GFPGAN v1.4 face restorer (Apache-2.0), sharpens the mouth with --enhance gfpgan",
            _GFPGAN,
        ),
    )
}


class WeightStatus(NamedTuple):
    """One row of `list_weights`; `verified` is None when the table has nothing to check against."""

    name: str
    present: bool
    verified: bool | None
    size: int | None
    path: Path


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The weight cache: `root` if given, else $WAV2LIP_HOME, else the platform's cache folder."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("WAV2LIP_HOME"):
        return Path(os.environ["WAV2LIP_HOME"]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "wav2lip"


def offline() -> bool:
    """True when $WAV2LIP_OFFLINE forbids downloads (for air-gapped machines and CI)."""
    return os.environ.get("WAV2LIP_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _secure(url: str) -> bool:
    """https, or http that never leaves this machine: where a download may come from."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def sources(entry: WeightFile) -> list[str]:
    """Download URLs for `entry`; $WAV2LIP_MIRROR (a base URL: https, a file:// folder, or http on this
    machine) replaces them all.

    A mirror serves every known file under its cache name, e.g. `$WAV2LIP_MIRROR/wav2lip_gan.pth`,
    which is what a team behind a firewall or a CI cache needs. Plain http elsewhere is refused: files
    the table has no SHA-256 for could be swapped on the way.
    """
    mirror = os.environ.get("WAV2LIP_MIRROR", "").strip()
    if mirror:
        if not (_secure(mirror) or mirror.startswith("file://")):
            raise Wav2LipError(f"WAV2LIP_MIRROR must be an https:// URL (or file:// for a folder, http:// only "
                               f"on this machine), got {mirror[:80]!r}")
        return [f"{mirror.rstrip('/')}/{entry.name}"]
    return list(entry.urls)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check(path: Path, entry: WeightFile) -> str | None:
    """Why the file at `path` is not `entry` (size first, it is free), or None if it matches."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"is {size:,} bytes, expected {entry.size:,}"
    if entry.sha256 is not None:
        actual = sha256_of(path)
        if actual != entry.sha256:
            return f"has SHA-256 {actual}, expected {entry.sha256}"
    return None


def _entry(name: str | WeightFile) -> WeightFile:
    if isinstance(name, WeightFile):
        return name
    if name in KNOWN:
        return KNOWN[name]
    raise Wav2LipError(f"{name}: not a known weight file (known: {', '.join(KNOWN)})")


def _get_it_here(entry: WeightFile, target: Path, wrong: str | None = None) -> str:
    """What to do by hand; `wrong` says why the file already at `target` is not the right one."""
    where = f"replace {target} (it {wrong}) with the right file" if wrong else f"put the file at {target}"
    return f"{where} (download it from {sources(entry)[0]}, or see {entry.homepage})"


def resolve(
    name_or_path: str | os.PathLike, download: bool = True, root: str | os.PathLike | None = None
) -> Path:
    """A path to use for `name_or_path`: an existing file as is, or a known name from the cache.

    A known name missing from the cache (or failing its checksum) is downloaded when allowed;
    otherwise the error says which file, where to put it and where to get it.
    """
    given = Path(name_or_path).expanduser()
    name = str(name_or_path)
    if given.is_file():
        problem = check(given, KNOWN[name]) if name in KNOWN else None  # a bare known name, found here
        if problem is not None:
            raise Wav2LipError(f"{name}: the file of that name in {Path.cwd()} {problem}, so it is not the "
                               f"known file: write ./{name} to use it anyway, or move it away to use the "
                               "model store's verified copy")
        return given
    if name not in KNOWN:
        raise Wav2LipError(
            f"{name}: no such file, and not a known weight name (known: {', '.join(KNOWN)})"
        )
    entry = KNOWN[name]
    target = cache_dir(root) / entry.name
    problem = None
    if target.is_file():
        problem = check(target, entry)
        if problem is None:
            return target
    if download and not offline():
        return fetch(entry, root=root)  # not force: a .part left by a broken download resumes
    why = "downloads are off (WAV2LIP_OFFLINE is set)" if download else "downloading was not allowed"
    found = f"the cached copy {problem}" if problem else "it is not in the weight cache"
    raise Wav2LipError(f"{entry.name}: {found} and {why}: {_get_it_here(entry, target, problem)}")


def resolve_all(names_or_paths: list[str | os.PathLike], download: bool = True,
                root: str | os.PathLike | None = None) -> list[Path]:
    """`resolve` for every weight file a command needs, with every missing one named in one error, so a
    user offline learns the whole list at once instead of one file per run."""
    paths, problems = [], []
    for name in names_or_paths:
        try:
            paths.append(resolve(name, download=download, root=root))
        except Wav2LipError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise Wav2LipError(problems[0])
    if problems:
        raise Wav2LipError(f"{len(problems)} weight files are missing: " + "; ".join(problems))
    return paths


def fetch(
    name: str | WeightFile,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download a known file (a name of `KNOWN`, or a `WeightFile`) into the cache and verify it.

    An already cached, verified file is returned without network access unless `force`.
    Each source is tried in turn; a broken connection leaves `<file>.part` for the next call
    to resume. Not `files.atomic_output`: resuming needs a temporary name that survives the process.
    """
    entry = _entry(name)
    target = cache_dir(root) / entry.name
    part = target.with_name(target.name + ".part")
    wrong = check(target, entry) if target.is_file() else None
    if target.is_file() and not force and wrong is None:
        return target
    if offline():
        raise Wav2LipError(
            f"{entry.name}: cannot download, WAV2LIP_OFFLINE is set: {_get_it_here(entry, target, wrong)}"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Wav2LipError(f"{target.parent}: cannot create the weight cache ({exc.strerror})") from exc
    if force:
        part.unlink(missing_ok=True)
    failures = []
    for url in sources(entry):
        try:
            _download(url, part, entry, progress)
        except _Failed as exc:
            failures.append(f"{url}: {exc}")
            continue
        problem = check(part, entry)
        if problem is not None:
            part.unlink()
            failures.append(f"{url}: checksum mismatch, the download {problem}; deleted {part}")
            continue
        os.replace(part, target)
        return target
    raise Wav2LipError(
        f"{entry.name}: download failed ({'; '.join(failures)}): {_get_it_here(entry, target, wrong)}"
    )


class _Failed(Exception):
    """One source did not deliver; the message says why, for the combined error."""


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only where a download may come from, and never from https to anything less."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _secure(newurl) or urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            fp.close()
            raise _Failed(f"redirected to {newurl}, not https: refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade)


_CONTENT_RANGE = re.compile(r"bytes (\d+)-")


def _download(url: str, part: Path, entry: WeightFile, progress: bool) -> None:
    """Stream `url` into `part`, continuing an existing `part` where that is safe.

    Resuming needs a known SHA-256: without one, bytes joined from two attempts could not be checked.
    """
    have = part.stat().st_size if part.exists() and entry.sha256 else 0
    if entry.size is not None and have >= entry.size:
        if have == entry.size and check(part, entry) is None:
            return  # complete from an earlier run that stopped before the rename
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "wav2lip"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = _OPENER.open(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our .part is not a prefix the server recognises
            part.unlink()
            return _download(url, part, entry, progress)
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Failed(f"cannot connect ({reason})") from exc
    with response:
        if have:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if getattr(response, "status", None) != 206 or not match or int(match[1]) != have:
                have = 0  # the server ignored the Range request: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else entry.size
        received = have
        try:
            with open(part, "ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=entry.name, disable=not progress, leave=False,
            ) as bar:
                while block := _read(response, received):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        except OSError as exc:
            raise Wav2LipError(f"{part}: cannot write the download ({exc.strerror})") from exc
    if total is not None and received < total:
        raise _Failed(f"connection closed after {received:,} of {total:,} bytes; run again to resume")


def _read(response, received: int) -> bytes:
    """The next block; a network failure (not a disk one) becomes `_Failed` so the .part is kept."""
    try:
        return response.read(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise _Failed(f"connection lost after {received:,} bytes ({exc!r}); run again to resume") from exc


def list_weights(root: str | os.PathLike | None = None) -> list[WeightStatus]:
    """What the cache holds for each known file, checked against the table."""
    rows = []
    folder = cache_dir(root)
    for entry in KNOWN.values():
        path = folder / entry.name
        if not path.is_file():
            rows.append(WeightStatus(entry.name, False, None, None, path))
            continue
        verifiable = entry.size is not None or entry.sha256 is not None
        verified = check(path, entry) is None if verifiable else None
        rows.append(WeightStatus(entry.name, True, verified, path.stat().st_size, path))
    return rows
