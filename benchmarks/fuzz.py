"""Fuzz campaign: mutated media, weights, manifests, configs, detection-cache entries and training data through
every command that reads them, each case in a forked child with a time and a memory limit.

    python benchmarks/fuzz.py --seed 0 --cases 10000            # the campaign; prints the outcome table
    python benchmarks/fuzz.py --seed 1 --cases 300 --only infer  # one command (or infer:audio, one role)
    python benchmarks/fuzz.py --replay tests/fuzz/cases           # the saved regression cases

Outcomes: success, clean refusal (non-zero exit, one line; one line per item for batch commands), and the
defects: traceback, hang, crash (a signal), memory (over the 4 GiB limit, or a MemoryError), leftover (a
file in the output folder after a failure, a temporary or partial file anywhere), input changed, noisy
refusal (several lines or none). Each defect is minimised and saved as a JSON case under --save, which
tests/fuzz replays. Cases are pure functions of (--seed, index): the same command draws the same cases.
See docs/fuzzing.md.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # no thread pool before fork
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # support.deterministic: the seed weights' fill
sys.path.insert(0, str(ROOT / "benchmarks"))

from fuzzing import runner, seeds as seed_files, serve, targets  # noqa: E402


def _build_seeds(folder: Path) -> dict[str, seed_files.Seed]:
    """Seeds are written in a child, so the parent never runs torch (and never starts its threads)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            seed_files.build(folder)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("fuzz: could not build the seed files (see above)")
    return seed_files.load(folder)


def _warm_imports() -> None:
    """What every command imports, loaded once in the parent so each child starts at once."""
    import torch  # noqa: F401

    import wav2lip.cli  # noqa: F401
    from wav2lip.cli import build_parser

    build_parser()
    import wav2lip.checkpoints  # noqa: F401
    import wav2lip.evaluation.sync  # noqa: F401
    import wav2lip.faces.cache  # noqa: F401
    import wav2lip.lipsync.live  # noqa: F401
    import wav2lip.lipsync.offline  # noqa: F401
    import wav2lip.train  # noqa: F401
    import wav2lip.data.preprocess  # noqa: F401
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads != 1:
        raise SystemExit(f"fuzz: the parent has {threads} threads after its imports; forking would not be safe")


def run_cases(count: int, case_at: Callable[[int], runner.Case], work: Path, seeds: dict[str, seed_files.Seed],
              jobs: int, limit_s: float, keep: bool, progress: bool,
              server: serve.Server | None = None) -> list[tuple[runner.Case, runner.Result]]:
    """Run cases 0..count-1 (each made by `case_at` when it starts: a mutant can be megabytes), `jobs` at a
    time; a hang is run again alone (with twice the time) before it counts."""
    pending = list(range(count))
    running: dict[int, tuple[runner.Case, runner.Running, Path, dict]] = {}
    results: list[tuple[runner.Case, runner.Result] | None] = [None] * count
    done = 0
    started = time.monotonic()
    while pending or running:
        while pending and len(running) < jobs:
            k = pending.pop(0)
            case = case_at(k)
            case_dir = work / "cases" / str(k)
            args, env, watched = runner.prepare(case, case_dir, seeds)
            running[k] = (case, runner.start(args, case_dir, env), case_dir, watched)
        for k in list(running):
            case, run, case_dir, watched = running[k]
            finished = runner.poll(run, limit_s)
            if finished is None:
                continue
            del running[k]
            status, peak, timed_out = finished
            result = runner.judge(case, case_dir, status, peak, timed_out, time.monotonic() - run.started, watched)
            if result.outcome == runner.HANG:
                result = runner.run_one(case, case_dir, seeds, 2 * limit_s)
            if server is not None and case.target.startswith("serve:"):
                verdict = case_dir / "verdict.json"
                if verdict.exists() and (job := json.loads(verdict.read_text()).get("job")):
                    server.accepted.add(job)
                if crash := server.new_tracebacks():
                    result = runner.Result(runner.TRACEBACK, result.code, result.seconds, result.peak_mb,
                                           f"in the server's log: {crash}")
            results[k] = (case, result) if result.outcome in runner.FAILURES else (case.light(), result)
            if not keep and result.outcome not in runner.FAILURES:
                runner.remove(case_dir)
            done += 1
            if result.outcome in runner.FAILURES:
                print(f"  case {case.index} {case.target} {case.seed}{'/' + case.member if case.member else ''}"
                      f" [{', '.join(case.mutators)}]: {result.outcome}: {result.detail}", file=sys.stderr)
            if progress and done % 100 == 0:
                rate = done / (time.monotonic() - started)
                print(f"  {done}/{count} cases, {rate:.1f}/s", file=sys.stderr)
        time.sleep(0.005)
    return [r for r in results if r is not None]


def table(records: list[dict]) -> str:
    """Outcomes per target (a Markdown table), mean seconds and peak memory per case, from the records
    `--json` writes (so the parts of a campaign split with --first can be summed with --summarise)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    seconds: dict[str, float] = defaultdict(float)
    peak: dict[str, float] = defaultdict(float)
    for record in records:
        for key in (record["target"], "all"):
            counts[key][record["outcome"]] += 1
            seconds[key] += record["seconds"]
            peak[key] = max(peak[key], record["peak_mb"])
    header = ["target", "cases", *runner.OUTCOMES, "mean s", "peak MB"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(k for k in counts if k != "all") + ["all"]:
        n = sum(counts[key].values())
        rows.append("| " + " | ".join([f"**{key}**" if key == "all" else key, str(n),
                                       *(str(counts[key][o]) for o in runner.OUTCOMES),
                                       f"{seconds[key] / n:.2f}", f"{peak[key]:.0f}"]) + " |")
    return "\n".join(rows)


def _record(case: runner.Case, result: runner.Result) -> dict:
    return {**case.to_json(), "outcome": result.outcome, "code": result.code, "seconds": round(result.seconds, 3),
            "peak_mb": round(result.peak_mb), "detail": result.detail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="campaign seed: the same seed draws the same cases")
    parser.add_argument("--cases", type=int, default=1000, help="number of cases")
    parser.add_argument("--first", type=int, default=0, help="index of the first case (to split a campaign)")
    parser.add_argument("--only", action="append", metavar="TARGET",
                        help=f"only this command or command:role (repeatable): {', '.join(targets.BY_NAME)}")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--time-limit", type=float, default=120, help="seconds per case before it is a hang")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one, removed after)")
    parser.add_argument("--save", type=Path, default=ROOT / "tests" / "fuzz" / "cases",
                        help="where failing cases are saved, minimised (default: tests/fuzz/cases)")
    parser.add_argument("--no-save", action="store_true", help="do not minimise and save failing cases")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="JSON_OR_FOLDER",
                        help="run saved cases instead of drawing new ones")
    parser.add_argument("--json", type=Path, help="write the outcome of every case here")
    parser.add_argument("--keep", action="store_true", help="keep every case's folder (in --work)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSON",
                        help="print the table of earlier runs' --json files (the parts of one campaign) and stop")
    args = parser.parse_args(argv)
    if args.summarise:
        records = [r for path in args.summarise for r in json.loads(path.read_text())]
        print(table(records))
        bad = sum(r["outcome"] in runner.FAILURES for r in records)
        print(f"\n{len(records)} cases from {len(args.summarise)} runs, {bad} defects")
        return 1 if bad else 0

    work = args.work or Path(tempfile.mkdtemp(prefix="wav2lip-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        seeds = _build_seeds(work / "seeds")
        _warm_imports()
        if args.replay:
            files = [f for p in args.replay for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
            count = len(files)

            def case_at(k: int) -> runner.Case:
                return runner.Case.from_json(json.loads(files[k].read_text()))
        else:
            chosen = targets.select(args.only)
            if not serve.available():
                print("fuzz: wav2lip[serve] or websocket-client is not installed: the serve targets are left out",
                      file=sys.stderr)
                chosen = [t for t in chosen if t.command != "serve"] or sys.exit("fuzz: no target left to run")
            count = args.cases

            def case_at(k: int) -> runner.Case:
                return runner.draw(args.seed, args.first + k, chosen, seeds)
        server = None
        if any(case_at(k).target.startswith("serve:") for k in range(count)):
            server = serve.Server(work, seeds)
            os.environ[serve.PORT_VARIABLE] = str(server.port)
        try:
            results = run_cases(count, case_at, work, seeds, args.jobs, args.time_limit, args.keep, not args.quiet,
                                server)
        finally:
            if server is not None:
                server.stop()
        wall = time.monotonic() - began
        failures = [(c, r) for c, r in results if r.outcome in runner.FAILURES]
        if server is not None:
            stray = server.stray_folders(server.accepted)
            print(f"server: peak memory {server.peak_mb:.0f} MB, {len(server.accepted)} jobs accepted, "
                  f"{len(stray)} job folders nobody was answered 201 for{': ' + ', '.join(stray[:5]) if stray else ''}")
            if stray:
                failures.append((runner.Case("serve:data-dir", "", "", 0, []),
                                 runner.Result(runner.LEFTOVER, None, 0, 0, ", ".join(stray[:5]))))
        saved = []
        if failures and not args.no_save and not args.replay:
            for case, result in failures:
                small = runner.minimise(case, result, work / "minimise", seeds, args.time_limit)
                saved.append(runner.save(small, result, args.save))
        records = [_record(case, result) for case, result in results]
        print(table(records))
        what = "replayed" if args.replay else f"seed {args.seed}, cases {args.first}..{args.first + count - 1}"
        print(f"\n{len(results)} cases ({what}), {len(failures)} defects, {wall:.0f} s wall, jobs {args.jobs}")
        for path in saved:
            print(f"saved {path}")
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
        return 1 if failures else 0
    finally:
        if args.work is None and not args.keep:
            runner.remove(work)


if __name__ == "__main__":
    sys.exit(main())
