"""`wav2lip weights list|fetch|inspect`: see what the weight cache holds, fill it, identify a file."""
from __future__ import annotations

import argparse

from .. import store


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--weights-dir", metavar="DIR", default=None,
        help="weight cache folder (default: $WAV2LIP_HOME or the platform cache, e.g. ~/.cache/wav2lip)",
    )
    parser = subparsers.add_parser(
        "weights", help="list, download and inspect model weight files",
        description="Manage the cache of known weight files (downloads honour $WAV2LIP_MIRROR "
        "and $WAV2LIP_OFFLINE).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="show which known files are present and verified")
    listing.set_defaults(func=_list)

    fetching = actions.add_parser("fetch", parents=[common], help="download known files and verify them")
    fetching.add_argument("names", nargs="+", metavar="NAME", choices=list(store.KNOWN),
                          help=f"one of: {', '.join(store.KNOWN)}")
    fetching.add_argument("--force", action="store_true", help="download again even if a verified copy is cached")
    fetching.set_defaults(func=_fetch)

    inspecting = actions.add_parser("inspect", parents=[common], help="tell which network a checkpoint holds")
    inspecting.add_argument("file", metavar="FILE", help="a checkpoint path, or a known name in the cache")
    inspecting.set_defaults(func=_inspect)


def _human(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:,.1f} MB"


def _list(args: argparse.Namespace) -> int:
    rows = store.list_weights(args.weights_dir)
    print(f"weight cache: {store.cache_dir(args.weights_dir)}")
    width = max(len(row.name) for row in rows)
    for row in rows:
        entry = store.KNOWN[row.name]
        if not row.present:
            status = "missing"
        elif row.verified is None:
            status = "present (no checksum known)"
        else:
            status = "verified" if row.verified else "CORRUPT (fails its checksum)"
        print(f"{row.name:<{width}}  {entry.kind:<13}  {_human(row.size):>10}  {status:<28}  {entry.description}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    for name in args.names:
        path = store.fetch(name, root=args.weights_dir, force=args.force)
        print(f"{name}: verified, {path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    path = store.resolve(args.file, download=False, root=args.weights_dir)
    from ..checkpoints import inspect_checkpoint  # importing torch only once the file is there
    from ..lipsync.kernel import lead_samples

    info = inspect_checkpoint(path)
    print(f"file:       {path}")
    print(f"kind:       {info.kind}")
    print(f"parameters: {info.n_params:,}")
    if info.file_size is not None:
        print(f"size:       {_human(info.file_size)}")
    if info.student:
        print(f"student:    distilled from {info.teacher['name']} (sha256 {info.teacher['sha256']})")
    residual = None if info.residual is None else "yes" if info.residual else "no (left out)"
    window = None
    if info.mel_offset:
        window = (f"{info.mel_offset:+d} mel steps ({12.5 * info.mel_offset:+g} ms): needs "
                  f"{lead_samples(info.mel_offset) / 16:g} ms of audio after a frame's start")
    for label, value in (("step", info.step), ("epoch", info.epoch), ("variant", info.variant),
                         ("width", info.width), ("residual", residual), ("window", window)):
        if value is not None:
            print(f"{label + ':':<11} {value}")
    return 0
