"""Face detection cost and accuracy on this machine.

    python benchmarks/bench_detect.py [--only cost|accuracy] [--frames 25] [--repeats 3] [--threads N]

Cost: ms per frame for each backend and setting at 512, 720 and 1080 lines (720p/1080p frames are real
512x512 frames of hdtf_kh.mp4 scaled up and widened to 16:9 by reflection), and the share of
detection in detection + generator time (generator: batch 16, deterministic weights; decoding,
blending and encoding are left out). RetinaFace runs the real weights; S3FD the deterministic fill
(the cost does not depend on the weights).

Accuracy: on every real clip in ../shared/media, the default tracking against full-resolution
per-frame RetinaFace detection: frames without a face, mean and min IoU of the tracked detector box
(raw) and of the smoothed box against smoothed per-frame boxes.
"""
from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip.faces import FaceTrackOptions, box_iou, create_detector, track
from wav2lip.faces.smoothing import Centered
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.models.s3fd import S3FD
from wav2lip.io.video import open_source


SHARED = Path(__file__).resolve().parents[2] / "shared"
MEDIA, WEIGHTS = SHARED / "media", SHARED / "models" / "retinaface_mobilenet0.25.pth"
CLIPS = ("vr_face2.mp4", "vr_face3.mp4", "vr_face5.mp4", "hdtf_kh.mp4", "st_art0.png")


def frames_at(frames: list[np.ndarray], lines: int) -> list[np.ndarray]:
    """Square frames scaled to `lines` rows; when enlarged, widened to 16:9 by reflection (1280x720, 1920x1080)."""
    out = []
    for frame in frames:
        up = lines > frame.shape[0]
        scaled = cv2.resize(frame, (lines, lines), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
        if up:
            side = (lines * 16 // 9 - lines) // 2
            scaled = cv2.copyMakeBorder(scaled, 0, 0, side, side, cv2.BORDER_REFLECT)
        out.append(scaled)
    return out


def best_ms_per_frame(fn, n_frames: int, repeats: int) -> float:
    """Best wall time of `repeats` runs of `fn`, per frame."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n_frames * 1000


def generator_ms_per_frame(repeats: int) -> float:
    model = fill_deterministic(Wav2Lip())
    audio, face = torch.randn(16, 1, 80, 16), torch.rand(16, 6, 96, 96)

    def run() -> None:
        with torch.inference_mode():
            model(audio, face)

    return best_ms_per_frame(run, 16, repeats)


def cost(n: int, repeats: int) -> None:
    with open_source(MEDIA / "hdtf_kh.mp4") as source:
        base = list(islice(iter(source), n))
    s3fd_model = fill_deterministic(S3FD())
    tracking = FaceTrackOptions()
    settings = [  # backend, label, max_size, tracking options (None: detect every frame), frames timed
        ("retinaface", "full size, every frame", None, None, n),
        ("retinaface", "max_size 640, every frame", 640, None, n),
        ("retinaface", "max_size 480, every frame", 480, None, n),
        ("retinaface", "max_size 320, every frame", 320, None, n),
        ("retinaface", "480, track, full every 5", 480, FaceTrackOptions(detect_every=5), n),
        ("retinaface", "480, track, full every 25 (default)", 480, tracking, n),
        ("s3fd", "full size, every frame (reference)", None, None, 1),
        ("s3fd", "max_size 480, every frame", 480, None, 2),
        ("s3fd", "480, track, full every 25", 480, tracking, n),
    ]
    detectors = [
        create_detector(backend, weights=WEIGHTS, batch_size=1, max_size=max_size) if backend == "retinaface"
        else create_detector(backend, model=s3fd_model, batch_size=1, max_size=max_size)
        for backend, _, max_size, _, _ in settings
    ]
    gen = generator_ms_per_frame(repeats)
    lines = (512, 720, 1080)
    inputs = {h: frames_at(base, h) for h in lines}
    # Settings take turns within each repeat, so that load from other processes hits all of them alike.
    best = np.full((len(settings), len(lines)), np.inf)
    for _ in range(repeats):
        for col, h in enumerate(lines):
            for row, ((_, _, _, options, count), detector) in enumerate(zip(settings, detectors)):
                if count == 1 and np.isfinite(best[row, col]):
                    continue  # single-frame S3FD reference runs: once is enough
                frames = inputs[h][:count]
                start = time.perf_counter()
                if options is None:
                    for frame in frames:
                        detector.detect([frame])
                else:
                    list(track(frames, detector, options))
                best[row, col] = min(best[row, col], (time.perf_counter() - start) / count * 1000)
    print(f"\nDetection cost, ms/frame (best of {repeats}; torch threads {torch.get_num_threads()}); "
          f"generator {gen:.1f} ms/frame; share = detection / (detection + generator)")
    print("| backend | setting | " + " | ".join(f"{h}p ms | share" for h in lines) + " |")
    print("|---|---|" + "---|---|" * len(lines))
    for (backend, label, _, _, _), row in zip(settings, best):
        cells = " | ".join(f"{ms:.1f} | {ms / (ms + gen):.0%}" for ms in row)
        print(f"| {backend} | {label} | {cells} |")


def _smooth(boxes: np.ndarray) -> np.ndarray:
    smoother, out = Centered(2), []
    for box in boxes:
        out += smoother.push(box)
    return np.array(out + smoother.finish())


def accuracy() -> None:
    full = create_detector("retinaface", weights=WEIGHTS, max_size=None, batch_size=1)
    default = create_detector("retinaface", weights=WEIGHTS)
    print("\nDefault tracking vs full-resolution per-frame RetinaFace (IoU: mean / min)")
    print("| clip | frames | size | no face (tracked) | no face (full) | raw box IoU | smoothed box IoU "
          "| corner error, % of box width: mean / max |")
    print("|---|---|---|---|---|---|---|---|")
    for name in CLIPS:
        with open_source(MEDIA / name) as source:
            frames = list(source)
        reference = [d[0].box if d else None for d in (full.detect([f])[0] for f in frames)]
        items = list(track(frames, default, FaceTrackOptions(pads=(0, 0, 0, 0))))
        missing_ref = sum(r is None for r in reference)
        missing = sum(i.box is None for i in items)
        pairs = [(i, r) for i, r in zip(items, reference) if i.raw is not None and r is not None]
        raw = np.array([box_iou(i.raw, r)[0, 0] for i, r in pairs])
        ref_smooth = _smooth(np.array([r for _, r in pairs]))
        smooth = np.array([box_iou(i.box, r)[0, 0] for (i, _), r in zip(pairs, ref_smooth)])
        corner = np.array([np.abs(i.raw - r).mean() / (r[2] - r[0]) * 100 for i, r in pairs])
        h, w = frames[0].shape[:2]
        print(f"| {name} | {len(frames)} | {w}x{h} | {missing} | {missing_ref} | {raw.mean():.3f} / {raw.min():.3f} | "
              f"{smooth.mean():.3f} / {smooth.min():.3f} | {corner.mean():.1f} / {corner.max():.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("cost", "accuracy"))
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only != "accuracy":
        cost(args.frames, args.repeats)
    if args.only != "cost":
        accuracy()


if __name__ == "__main__":
    main()
