"""`wav2lip live`: lip-sync an avatar to streaming speech in real time, into a file or a network stream."""
from __future__ import annotations

import argparse
import sys

from ..constants import SAMPLE_RATE, STREAM_CONTAINERS
from ..lipsync.options import STREAM_TABLE, ModelOptions, StreamOptions, SyncOptions, add_arguments, from_namespace


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "live", help="lip-sync an avatar to streaming speech in real time",
        description="Lip-sync AVATAR (a still image or a video loop) to SOURCE as it plays, frame by frame, and "
        "write the video with its audio to TARGET. SOURCE is an audio file, played at real-time pace, or - for "
        "raw 16 kHz mono PCM on stdin (so any TTS can pipe into it); while it sends nothing the avatar's own "
        "frames keep the frame rate. TARGET is a video file, or a network stream: udp://, srt://, tcp:// "
        "(MPEG-TS), rtmp:// (FLV), rtsp://. Every option means what it means for `wav2lip infer`.",
    )
    p.add_argument("--face", metavar="AVATAR", required=True, help="still image or video of the face")
    p.add_argument("--audio", metavar="SOURCE", required=True, help="audio file, or - for raw PCM on stdin")
    p.add_argument("-o", "--output", dest="output", metavar="TARGET", required=True,
                   help=f"video file ({', '.join(STREAM_CONTAINERS)}) or network URL")
    add_arguments(p, "live")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.streams import LiveOutput, check_stream_output, file_chunks, pcm_chunks  # PyAV, torch: only now
    from ..lipsync.live import LiveSyncer

    stream = from_namespace(args, StreamOptions)
    for name, value in stream.items():  # ranges: --sample-rate 1 would resample 16,000-fold
        STREAM_TABLE[name].check(value)
    check_stream_output(args.output, [args.face, args.audio if args.audio != "-" else None,
                                      args.checkpoint, args.detector_weights, args.speaker_model, args.enhancer_weights])
    # a bad file fails before the models load
    chunks = None if args.audio == "-" else file_chunks(args.audio, stream["chunk"])
    live = LiveSyncer(args.face, stall=stream["stall"], max_delay=stream["max_delay"],
                      **from_namespace(args, ModelOptions), **from_namespace(args, SyncOptions))
    if args.audio == "-":
        chunks, rate = pcm_chunks(sys.stdin.buffer.fileno(), stream["pcm_format"]), stream["sample_rate"]
    else:
        rate = SAMPLE_RATE
    idle = held = 0
    with LiveOutput(args.output, live.fps, live.width, live.height, crf=args.crf, preset=args.preset) as out:
        frames = live.stream(chunks, sample_rate=rate)
        try:
            for frame in frames:
                out.write(frame.image, frame.audio)
                idle += frame.sample is None
                held += frame.held
        except KeyboardInterrupt:  # stop: what was made so far is kept
            print("wav2lip: stopped", file=sys.stderr)
        finally:
            frames.close()
    print(f"{out.frames} frames ({out.frames / live.fps:.2f} s at {live.fps:g} fps), {idle} without speech, "
          f"{held} with a held mouth (behind by over --max-delay) -> {args.output}", file=sys.stderr)
    return 0
