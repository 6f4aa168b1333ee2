"""Start-up time of the `wav2lip` command: `--help` and one subcommand's `--help`, wall time of a fresh
process each run (the median of --runs), and whether torch was imported. Target (issue 26): `wav2lip --help`
<= 0.3 s.

    python benchmarks/bench_startup.py [--runs 10]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

# Each case: a label and the arguments after `wav2lip`.
CASES = [("wav2lip --help", ["--help"]), ("wav2lip infer --help", ["infer", "--help"])]


def command() -> list[str]:
    """The installed console script when there is one (what users run), else `python -m wav2lip`."""
    script = shutil.which("wav2lip")
    return [script] if script else [sys.executable, "-m", "wav2lip"]


def wall_times(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command() + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def imports_torch(args: list[str]) -> bool:
    """Whether `python -m wav2lip ARGS` imports torch (its -X importtime report names every module)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "wav2lip", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True)
    return any(line.split("|")[-1].strip() == "torch" for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="processes per case (default: 10)")
    runs = parser.parse_args().runs
    print(f"command: {' '.join(command())}, {runs} runs each")
    print(f"{'case':<24} {'median s':>9} {'min s':>7} {'max s':>7}  torch imported")
    for label, args in CASES:
        times = wall_times(args, runs)
        print(f"{label:<24} {statistics.median(times):9.3f} {min(times):7.3f} {max(times):7.3f}  "
              f"{'yes' if imports_torch(args) else 'no'}")


if __name__ == "__main__":
    main()
