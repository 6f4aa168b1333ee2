"""`wav2lip infer`: lip-sync a video or photo to speech (one pair, or many with --manifest).

Every option of the authors' inference script exists; their spellings are accepted as aliases.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import store
from ..errors import Wav2LipError
from ..io.files import check_not_input
from ..lipsync.options import ENHANCERS, ModelOptions, SyncOptions, add_arguments, from_namespace
from ..shards import rank_and_world, shard
from .common import add_quiet, show_progress

if TYPE_CHECKING:
    from ..lipsync.offline import LipSyncer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer", help="lip-sync a video or photo to an audio file",
        description="Lip-sync FACE (a video or a still image) to AUDIO (any audio or video file) and write a "
        "video with that audio. The output covers the whole audio: a shorter video loops, a longer one is cut.",
    )
    p.add_argument("--face", metavar="FACE", help="video or image with the face to animate")
    p.add_argument("--audio", metavar="AUDIO", help="speech: any audio file, or a video's audio track")
    p.add_argument("-o", "--output", "--outfile", dest="output", metavar="OUT",
                   help="output video, .mp4, .mov or .mkv (default: results/result_voice.mp4; .mkv with "
                   "--lossless, which needs .mkv)")
    p.add_argument("--manifest", metavar="CSV",
                   help="batch mode: UTF-8 lines of face,audio,output (paths relative to the CSV's folder); "
                   "finished outputs are skipped, failures reported without stopping the rest; with RANK / "
                   "WORLD_SIZE set (torchrun, SLURM arrays) each machine takes every WORLD_SIZE-th line")
    p.add_argument("--preview-frame", type=int, metavar="N",
                   help="write only a PNG of output frame N (source | generated | blended | mask) to OUT "
                   "(default: results/preview.png), to tune the blend in a second")
    p.add_argument("--profile", action="store_true", help="print time per stage and end-to-end frames/s")
    add_quiet(p)
    add_arguments(p, "infer")
    p.add_argument("--nosmooth", dest="smooth", action="store_const", const="none", help=argparse.SUPPRESS)  # the authors' spelling
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict:
    return {**from_namespace(args, SyncOptions), "progress": show_progress(args)}


def _models(args: argparse.Namespace) -> dict:
    return from_namespace(args, ModelOptions)


def _output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    out = Path("results") / ("result_voice.mkv" if args.lossless else "result_voice.mp4")
    out.parent.mkdir(exist_ok=True)
    return out


def _read_manifest(path: Path) -> tuple[list[tuple[int, Path, Path, Path]], list[tuple[int, str]]]:
    """The manifest's jobs (line number, face, audio, output) and its malformed lines (number, problem)."""
    if not path.is_file():
        raise Wav2LipError(f"{path}: manifest not found" if not path.exists() else f"{path}: manifest is not a file")
    try:  # utf-8-sig: a byte-order mark (Excel, Notepad) is not part of the first cell
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise Wav2LipError(f"{path}:{line}: not UTF-8 text (save the manifest as UTF-8)") from None
    rows, bad = [], []
    try:
        lines = list(csv.reader(text.splitlines()))
    except csv.Error as exc:  # a field past csv's limit (128 kB): no manifest line is that long
        raise Wav2LipError(f"{path}: not a manifest of face,audio,output lines ({exc})") from None
    for number, row in enumerate(lines, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells] == ["face", "audio", "output"]:
            continue
        if len(cells) != 3 or not all(cells):
            bad.append((number, f"expected face,audio,output, got {len(cells)} fields"
                        + ("" if len(cells) != 3 else " with an empty one")))
            continue
        if any("\0" in c for c in cells):  # no file name holds one; the OS would refuse it with a ValueError
            bad.append((number, "a path holds a NUL byte"))
            continue
        face, audio, output = (path.parent / c for c in cells)
        rows.append((number, face, audio, output))
    return rows, bad


def _my_lines(rows: list, bad: list) -> tuple[list, list]:
    """This machine's share of the manifest's lines (good and malformed alike, by line number)."""
    mine = set(shard(sorted([row[0] for row in rows] + [number for number, _ in bad])))
    return [row for row in rows if row[0] in mine], [item for item in bad if item[0] in mine]


def _report(result, profile: bool) -> None:
    print(result.summary(), file=sys.stderr)
    if profile:
        print(result.profile_table(), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.manifest is None and (args.face is None or args.audio is None):
        raise Wav2LipError("give --face and --audio (or --manifest)")
    options = _options(args)
    SyncOptions.from_kwargs(options)  # bad options fail before the models load
    from ..faces.detectors import WEIGHT_NAMES  # torch and the models load only for good arguments
    from ..lipsync.offline import LipSyncer, check_output_path

    fitted = None if args.enhance in ENHANCERS else args.enhance  # a fit-enhancer file
    weights = [args.checkpoint, args.detector_weights, args.enhancer_weights, args.speaker_model, fitted]
    if args.preview_frame is not None:
        if args.manifest is not None:
            raise Wav2LipError("--preview-frame previews one face and audio: give --face and --audio, not --manifest")
        options.pop("progress")
        output = Path(args.output) if args.output else _output_path(args).with_name("preview.png")
        check_not_input(output, [args.face, args.audio, *weights])
        syncer = LipSyncer(**_models(args))
        print(syncer.preview(args.face, args.audio, output, args.preview_frame, **options).summary(), file=sys.stderr)
        return 0
    if args.manifest is None:
        output = check_output_path(_output_path(args), [args.face, args.audio, *weights], args.lossless)
    else:
        rows, bad = _my_lines(*_read_manifest(Path(args.manifest)))
    try:
        store.resolve(args.checkpoint)
    except Wav2LipError:  # name every weight file this run lacks, not one per run (the detector's too)
        store.resolve_all([args.checkpoint] + ([] if args.box else [args.detector_weights or WEIGHT_NAMES[args.detector]]))
        raise
    syncer = LipSyncer(**_models(args))
    if args.manifest is None:
        _report(syncer.run(args.face, args.audio, output, **options), args.profile)
        return 0
    return _run_manifest(syncer, Path(args.manifest), rows, bad, options, args.profile)


def _run_manifest(syncer: LipSyncer, manifest: Path, rows: list, bad: list, options: dict, profile: bool) -> int:
    """Every line runs whatever the others do; the summary counts done, skipped and failed lines."""
    from ..lipsync.offline import check_output_path

    failed = skipped = 0
    for number, problem in bad:
        failed += 1
        print(f"{manifest}:{number}: error: {problem}", file=sys.stderr)
    for number, face, audio, output in rows:
        try:
            check_not_input(output, [face, audio, manifest, *syncer.weights])
        except Wav2LipError as exc:
            failed += 1
            print(f"{manifest}:{number}: error: {exc}", file=sys.stderr)
            continue
        made: list[Path] = []
        try:  # a path too long for the OS fails its line here (ENAMETOOLONG), not the whole manifest
            if output.is_file():
                skipped += 1
                print(f"{manifest}:{number}: {output} exists, skipped", file=sys.stderr)
                continue
            made = [p for p in reversed(output.parents) if not p.exists()]
            if output.exists():
                kind = "a folder" if output.is_dir() else "not a regular file"
                raise Wav2LipError(f"{output}: is {kind}, not an output file")
            for folder in made:  # one level at a time: mkdir(parents=True) recurses once per missing level
                folder.mkdir(exist_ok=True)
            check_output_path(output, [manifest], options["lossless"])
            _report(syncer.run(face, audio, output, **options), profile)
        except (Wav2LipError, OSError) as exc:
            failed += 1
            print(f"{manifest}:{number}: error: {exc}", file=sys.stderr)
            for folder in reversed(made):  # folders made for this line, if it left them empty
                with contextlib.suppress(OSError):  # not empty, never made, or a path the OS refuses
                    folder.rmdir()
    total = len(rows) + len(bad)
    rank, world = rank_and_world()
    share = f"machine {rank + 1} of {world}: " if world > 1 else ""
    print(f"{share}{total - failed} of {total} lines done ({skipped} skipped: output exists), {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0
