"""`wav2lip live`: lip-sync an avatar to streaming speech in real time, into a file or a network stream."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import Wav2LipError
from ..faces import DETECTORS
from ..lipsync.live import (CROSSFADE, PCM_FORMATS, SILENCE_DB, STALL, LiveOutput, LiveSyncer, file_chunks, is_network_target,
                    pcm_chunks)
from ..lipsync.offline import BACKENDS, SyncOptions, check_output_path
from ..io.video import DEFAULT_CRF, DEFAULT_PRESET


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "live", help="lip-sync an avatar to streaming speech in real time",
        description="Lip-sync AVATAR (a still image or a video loop) to SOURCE as it plays, frame by frame, and "
        "write the video with its audio to TARGET. SOURCE is an audio file, played at real-time pace, or - for "
        "raw 16 kHz mono PCM on stdin (so any TTS can pipe into it); while it sends nothing the avatar's own "
        "frames keep the frame rate. TARGET is a video file, or a network stream: udp://, srt://, tcp:// "
        "(MPEG-TS), rtmp:// (FLV), rtsp://.",
    )
    p.add_argument("--face", metavar="AVATAR", required=True, help="still image or video of the face")
    p.add_argument("--audio", metavar="SOURCE", required=True, help="audio file, or - for raw PCM on stdin")
    p.add_argument("-o", "--output", dest="output", metavar="TARGET", required=True,
                   help="video file (.mp4, .mkv, .ts) or network URL")
    p.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint", default="wav2lip_gan.pth",
                   metavar="CKPT", help="generator weights: a file or a model-store name (default: wav2lip_gan.pth)")

    g = p.add_argument_group("audio")
    g.add_argument("--pcm-format", choices=tuple(PCM_FORMATS), default="s16le",
                   help="sample format of PCM on stdin (default: s16le)")
    g.add_argument("--sample-rate", type=int, default=16000, metavar="HZ",
                   help="sample rate of PCM on stdin (default: 16000; other rates are resampled)")
    g.add_argument("--chunk", type=float, default=0.02, metavar="SECONDS",
                   help="an audio file is played in chunks of this length (default: 0.02)")
    g.add_argument("--crossfade", type=int, default=CROSSFADE, metavar="N",
                   help=f"frames over which the mouth fades in and out at speech starts and stops (default: {CROSSFADE})")
    g.add_argument("--silence-db", type=float, default=SILENCE_DB, metavar="DBFS",
                   help=f"audio peaking below this level shows the avatar's own mouth (default: {SILENCE_DB:g})")
    g.add_argument("--no-silence-gate", action="store_true", help="lip-sync every frame, silent or not")
    g.add_argument("--stall", type=float, default=STALL, metavar="SECONDS",
                   help=f"a source pausing this long mid-speech finishes the speech with silence (default: {STALL:g})")

    g = p.add_argument_group("face")
    g.add_argument("--detector", choices=DETECTORS, default="retinaface", help="face detector (default: retinaface)")
    g.add_argument("--detector-weights", metavar="PATH", help="detector weights (default: the model store's)")
    g.add_argument("--pads", type=int, nargs=4, default=list(SyncOptions.pads),
                   metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="widen the detected box (default: 0 10 0 0)")
    g.add_argument("--box", type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="fixed face box for every frame: no detection, pads or smoothing")
    g.add_argument("--smooth", choices=("centered", "mean5", "none"), default="centered",
                   help="box smoothing (default: centered)")
    g.add_argument("--static", action="store_true", help="use only the first frame of the video")
    g.add_argument("--fps", type=float, metavar="FPS", help="frame rate (default: the video's; 25 for a still)")
    g.add_argument("--loop", choices=("repeat", "pingpong"), default="repeat", help="how the avatar video loops")

    g = p.add_argument_group("generation and output")
    g.add_argument("--blend", choices=("paste", "feather"), default="paste", help="default: paste")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: auto")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="default: auto")
    g.add_argument("--backend", choices=BACKENDS, default="torch", help="generator runtime (default: torch)")
    g.add_argument("--crf", type=int, default=DEFAULT_CRF, help=f"x264 quality (default: {DEFAULT_CRF})")
    g.add_argument("--preset", default=DEFAULT_PRESET, help=f"x264 preset (default: {DEFAULT_PRESET})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not is_network_target(args.output):
        inputs = [Path(args.face)] + ([] if args.audio == "-" else [Path(args.audio)])
        if any(Path(args.output).resolve() == path.resolve() for path in inputs):
            raise Wav2LipError(f"{args.output}: the output cannot be one of the inputs")
        check_output_path(args.output)
    if args.chunk <= 0:
        raise Wav2LipError(f"--chunk must be positive, got {args.chunk}")
    chunks = None if args.audio == "-" else file_chunks(args.audio, args.chunk)  # a bad file fails before the models load
    live = LiveSyncer(
        args.face, checkpoint=args.checkpoint, detector=args.detector, device=args.device, precision=args.precision,
        detector_weights=args.detector_weights, backend=args.backend, crossfade=args.crossfade,
        silence_db=None if args.no_silence_gate else args.silence_db, stall=args.stall, box=tuple(args.box) if args.box else None,
        pads=tuple(args.pads), smooth=args.smooth, static=args.static, fps=args.fps, loop=args.loop, blend=args.blend,
    )
    if args.audio == "-":
        chunks, rate = pcm_chunks(sys.stdin.buffer.fileno(), args.pcm_format), args.sample_rate
    else:
        rate = 16000
    idle = 0
    with LiveOutput(args.output, live.fps, live.width, live.height, crf=args.crf, preset=args.preset) as out:
        frames = live.stream(chunks, sample_rate=rate)
        try:
            for frame in frames:
                out.write(frame)
                idle += frame.sample is None
        except KeyboardInterrupt:  # stop: what was made so far is kept
            print("wav2lip: stopped", file=sys.stderr)
        finally:
            frames.close()
    print(f"{out.frames} frames ({out.frames / live.fps:.2f} s at {live.fps:g} fps), {idle} without speech "
          f"-> {args.output}", file=sys.stderr)
    return 0
