"""`wav2lip serve`: the page and the HTTP API in one process (needs `pip install 'wav2lip[serve]'`)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from .. import store
from ..errors import Wav2LipError
from ..lipsync.options import ModelOptions, add_arguments, from_namespace

DEFAULT_PORT = 7860  # the port Gradio apps use, where users of lip-sync pages look first
MAX_LIVE = 2  # serve.live.MAX_SESSIONS, spelt here so that --help imports no server code


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="a web page and an HTTP API for lip-sync jobs",
        description="Serve the lip-sync page at / and the API at /api (documented at /docs and /openapi.json). "
        "Models are loaded once; jobs run in a background queue and are kept in --data-dir.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on the API "
                   "(default: $WAV2LIP_TOKEN; needed when --host or --allow-host is not a loopback address)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to requests that name the server NAME (a reverse proxy's name, on its own "
                   "port and scheme); repeat for several; needs --token")
    add_arguments(p, "serve")  # the models: a job or a live session may pick another detector or precision
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="jobs run at the same time (default: 1, best on a CPU)")
    p.add_argument("--max-queue", type=int, default=16, metavar="N",
                   help="jobs waiting at most; more are refused with 503 (default: 16)")
    p.add_argument("--max-live", type=int, default=MAX_LIVE, metavar="N",
                   help=f"live sessions at once; more are refused (default: {MAX_LIVE}: each is real-time work)")
    p.add_argument("--max-upload-mb", type=float, default=500, metavar="MB",
                   help="largest request (face + audio) in MiB; larger is refused with 413 (default: 500)")
    p.add_argument("--max-audio-minutes", type=float, default=60, metavar="MIN",
                   help="refuse jobs with more audio than this: it bounds each job's memory, time and output "
                   "(default: 60)")
    p.add_argument("--data-dir", metavar="DIR", help="job folders (default: the 'serve' folder of the cache)")
    p.add_argument("--keep-hours", type=float, default=72, metavar="H",
                   help="remove finished jobs after H hours (default: 72)")
    p.add_argument("--keep-gb", type=float, default=10, metavar="GB",
                   help="remove the oldest finished jobs while all jobs take more than GB GiB (default: 10)")
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import JobQueue, Models, create_app
        from ..serve.guard import host_name
    except ImportError as exc:
        raise Wav2LipError(f"wav2lip serve needs the serve extra: pip install 'wav2lip[serve]' ({exc})") from None
    token = args.token or os.environ.get("WAV2LIP_TOKEN") or None
    if token is None and not _loopback(args.host):
        raise Wav2LipError(f"--host {args.host} lets other machines in: give --token (or set WAV2LIP_TOKEN)")
    for name in args.allow_host:
        if host_name(name) is None:
            raise Wav2LipError(f"--allow-host {name[:80]!r}: give a host name alone (no scheme, port or path)")
        if token is None and not _loopback(name.strip("[]")):
            raise Wav2LipError(f"--allow-host {name} lets other machines in: give --token (or set WAV2LIP_TOKEN)")
    if args.max_live < 1:
        raise Wav2LipError(f"--max-live must be at least 1, got {args.max_live}")
    if not 0 <= args.port <= 65535:
        raise Wav2LipError(f"--port must be 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_audio_minutes <= 0 or args.keep_hours < 0 or args.keep_gb < 0:
        raise Wav2LipError("--max-upload-mb and --max-audio-minutes must be positive, --keep-hours and --keep-gb "
                           "not negative")
    data_dir = Path(args.data_dir) if args.data_dir else store.cache_dir() / "serve"
    models = Models(**from_namespace(args, ModelOptions))
    queue = JobQueue(data_dir, models, workers=args.workers, max_queued=args.max_queue,
                     keep_hours=args.keep_hours, keep_bytes=int(args.keep_gb * 2**30))
    app = create_app(queue, token=token, max_upload=int(args.max_upload_mb * 2**20), host=args.host,
                     max_audio_minutes=args.max_audio_minutes, allow_hosts=tuple(args.allow_host),
                     max_live=args.max_live)
    print(f"wav2lip serve: http://{args.host}:{args.port}/ ({models.checkpoint_name}, {models.detector}, "
          f"{models.precision} on {models.default.device}; jobs in {queue.root})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
