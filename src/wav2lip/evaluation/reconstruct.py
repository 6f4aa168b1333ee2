"""The self-reenactment test: lip-sync a clip to its own soundtrack and compare each output frame with
the real one.

A perfect lip-sync model would give back the real video, so the distance between the two measures the
whole chain (generator, upscaling to the face box, blend, enhancer) where it matters, the lower face,
at the output's resolution:
- PSNR over the lower half of the face box, pooled over the frames (inf when they are equal);
- SSIM (Wang et al. 2004: 11-px Gaussian window, sigma 1.5, on the luminance) of the same region, the
  mean over frames;
- sharpness ratio: the variance of the Laplacian of the output's lower face over that of the real one,
  summed over frames (1: as sharp as the video; below: blurrier; above: over-sharpened);
- with a sync model, the output's AV offset, LSE-D and LSE-C, as `wav2lip evaluate` gives them.

`frames` limits the scored frames (e.g. "80%:" for the last fifth), so a model fitted on the rest of a
clip is judged only on frames it never saw.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import Wav2LipError
from ..io.files import atomic_output
from ..io.video import find_videos, open_source
from ..lipsync.kernel import Frame, prepare_frame
from ..lipsync.offline import LipSyncer
from ..lipsync.options import SyncOptions
from .measures import LowerFaceScore
from .sync import SyncModel, evaluate_sync, load_sync_model

_BOUND = re.compile(r"^\s*(-?\d+(?:\.\d+)?)(%?)\s*$")


def frame_range(spec: str | None, n_frames: int) -> tuple[int, int]:
    """"START:STOP" (frame numbers or percentages of the clip, either side may be empty; negative
    numbers count from the end) -> [start, stop) clamped to the clip; None: every frame."""
    if spec is None:
        return 0, n_frames
    parts = spec.split(":")
    if len(parts) != 2:
        raise Wav2LipError(f"--frames {spec!r}: expected START:STOP (e.g. 80%: or 100:250)")
    bounds = []
    for text, default in zip(parts, (0, n_frames)):
        if not text.strip():
            bounds.append(default)
            continue
        match = _BOUND.match(text)
        if match is None:
            raise Wav2LipError(f"--frames {spec!r}: {text!r} is not a frame number or a percentage")
        value = float(match.group(1))
        at = value / 100 * n_frames if match.group(2) else value
        if at < 0:
            at += n_frames
        bounds.append(int(round(min(max(at, 0), n_frames))))
    if bounds[0] >= bounds[1]:
        raise Wav2LipError(f"--frames {spec!r}: no frame of the clip's {n_frames} lies in it")
    return bounds[0], bounds[1]


@dataclass
class ReconstructionScore:
    """One clip lip-synced to its own soundtrack, measured against itself."""

    video: str
    frames: int  # output frames
    scored: int  # frames in the range with a face
    no_face: int  # frames in the range without one (passed through, not scored)
    first: int  # the range scored: [first, last)
    last: int
    psnr: float
    ssim: float
    sharpness_ratio: float
    offset: int | None = None  # sync of the output, with a sync model
    lse_d: float | None = None
    lse_c: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-safe: an infinite PSNR (output == real) as "inf", an unmeasured value as None."""
        def safe(v):
            if isinstance(v, float) and not math.isfinite(v):
                return "inf" if v == float("inf") else None
            return v
        return {k: safe(v) for k, v in asdict(self).items()}


class _Meter(LowerFaceScore):
    """Output frames in, each compared with the real frame it was made from."""

    def __init__(self, video: Path, options: SyncOptions, first: int, last: int) -> None:
        super().__init__()
        self.video, self.options, self.first, self.last = video, options, first, last
        self.real = iter(open_source(video, fps=options.fps, loop=options.loop).frames(last))
        self.no_face = 0

    def __call__(self, frame: Frame) -> None:
        if frame.index >= self.last:
            return
        real = prepare_frame(next(self.real), self.options, self.video)
        if frame.index < self.first:
            return
        if frame.box is None or not self.add(frame.image, real, frame.box):
            self.no_face += 1


def reconstruct(video: str | os.PathLike, syncer: LipSyncer, frames: str | None = None,
                sync_model: SyncModel | str | None = None, sync_device: str = "auto", **options) -> ReconstructionScore:
    """Lip-sync `video` to its own soundtrack with `syncer` (any checkpoint, student or enhancer) and
    `options` (SyncOptions fields), and score the frames of `frames` (see `frame_range`) against the
    real ones; with `sync_model` (a name, a path, expert:PATH or a loaded model) also the output's sync."""
    video = Path(video)
    started = time.perf_counter()
    options = {**options, "lossless": True}
    opts = SyncOptions.from_kwargs(options)
    meters: list[_Meter] = []

    def start(done: int, total: int) -> None:  # the first progress call says how many frames come
        if not meters:
            meters.append(_Meter(video, opts, *frame_range(frames, total)))

    with tempfile.TemporaryDirectory(prefix="wav2lip-reconstruct-") as folder:
        output = Path(folder) / "reconstruction.mkv"
        result = syncer.run(video, video, output, on_progress=start, on_frame=lambda f: meters[0](f), **options)
        sync = None
        if sync_model is not None:
            sync = evaluate_sync(output, model=sync_model, device=sync_device)
    meter = meters[0]
    return ReconstructionScore(
        video=str(video), frames=result.frames, scored=len(meter.ssims), no_face=meter.no_face,
        first=meter.first, last=meter.last, psnr=meter.psnr, ssim=meter.mean_ssim,
        sharpness_ratio=meter.sharpness_ratio,
        offset=None if sync is None else sync.offset, lse_d=None if sync is None else sync.lse_d,
        lse_c=None if sync is None else sync.lse_c, seconds=time.perf_counter() - started)


MEAN_FIELDS = ("psnr", "ssim", "sharpness_ratio", "lse_d", "lse_c")


def means(rows: list[tuple[str, ReconstructionScore | None, str | None]]) -> dict:
    """Videos, failures and the mean of each measure over the videos that have it: the finite values
    (inf when every PSNR is: each output equal to its video), None when no video has it."""
    scores = [s for _, s, _ in rows if s is not None]
    summary: dict = {"videos": len(rows), "failed": len(rows) - len(scores)}
    for key in MEAN_FIELDS:
        values = [v for v in (getattr(s, key) for s in scores) if v is not None and not math.isnan(v)]
        finite = [v for v in values if math.isfinite(v)]
        summary[key] = float(np.mean(finite)) if finite else (float("inf") if values else None)
    return summary


CSV_FIELDS = ("video", "frames", "scored", "no_face", "first", "last", "psnr", "ssim", "sharpness_ratio", "offset",
              "lse_d", "lse_c", "seconds")


def reconstruct_folder(folder: str | os.PathLike, syncer: LipSyncer, frames: str | None = None,
                       sync_model: SyncModel | str | None = None, sync_device: str = "auto",
                       json_path: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None,
                       report: Callable[[str, ReconstructionScore | None, str | None], None] | None = None,
                       **options) -> list[tuple[str, ReconstructionScore | None, str | None]]:
    """`reconstruct` every video under `folder`: (relative name, score or None, error or None) per video,
    a clip that fails is reported and the rest go on; JSON (the rows and the means) and CSV written
    atomically at the end."""
    root = Path(folder)
    videos = find_videos(root)
    if not videos:
        raise Wav2LipError(f"{root}: no videos found")
    if isinstance(sync_model, (str, os.PathLike)):
        sync_model = load_sync_model(sync_model, sync_device)
    rows = []
    for path in videos:
        name = str(path.relative_to(root))
        try:
            score, error = reconstruct(path, syncer, frames, sync_model, sync_device, **options), None
        except Wav2LipError as exc:
            score, error = None, str(exc)
        rows.append((name, score, error))
        if report is not None:
            report(name, score, error)
    if json_path:
        summary = {k: "inf" if v == float("inf") else v for k, v in means(rows).items()}
        data = {"frames": frames, "options": options, "means": summary,
                "videos": [{**(s.as_dict() if s else {}), "video": n, "error": e} for n, s, e in rows]}
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
    if csv_path:
        with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*CSV_FIELDS, "error"])
            for name, score, error in rows:
                values = score.as_dict() if score else {}
                writer.writerow([name, *(values.get(k, "") for k in CSV_FIELDS[1:]), error or ""])
    return rows
