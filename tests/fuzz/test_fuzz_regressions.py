"""The fuzz campaign in CI: every case it saved (tests/fuzz/cases: a defect it once found, minimised) replayed,
and a fast seeded subset of the campaign itself, both through benchmarks/fuzz.py's fork server in a
subprocess (forking needs a parent that never started torch's threads, which a pytest process may have).
A case passes when the command succeeds or refuses cleanly; any traceback, hang, crash, memory overrun,
leftover file, changed input or noisy refusal fails it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "cases"
CLEAN = {"success", "refused"}
# The fast subset leaves out the targets that take seconds a case (training steps, GFPGAN); the campaign runs them.
FAST = ["infer:face", "infer:audio", "infer:checkpoint", "infer:manifest", "infer:cache", "infer:detector",
        "detect:video", "detect:detector", "evaluate:video", "evaluate:audio", "evaluate:expert", "preprocess:raw",
        "live:face", "live:audio", "train:config", "train:expert", "inspect:checkpoint", "serve:form", "serve:face",
        "serve:live-start"]


def fuzz(tmp_path: Path, *args: str) -> list[dict]:
    """benchmarks/fuzz.py with `args`; the outcome of each case."""
    out = tmp_path / "outcomes.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), *args, "--no-save", "-q",
                             "--work", str(tmp_path / "work"), "--json", str(out)],
                            capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert out.exists(), result.stderr[-3000:]
    return json.loads(out.read_text())


def _report(bad: list[dict]) -> str:
    return "\n".join(f"{c['target']} {c['seed']} {c['mutators']}: {c['outcome']}: {c['detail']}" for c in bad)


def test_saved_cases_are_clean(tmp_path):
    saved = sorted(CASES.glob("*.json"))
    assert saved, "no saved cases"
    outcomes = fuzz(tmp_path, "--replay", str(CASES))
    assert len(outcomes) == len(saved)
    bad = [c for c in outcomes if c["outcome"] not in CLEAN]
    assert not bad, _report(bad)


def test_saved_cases_are_small():
    assert sum(p.stat().st_size for p in CASES.glob("*.json")) < 1 << 20


@pytest.mark.parametrize("seed", [1])
def test_seeded_subset(tmp_path, seed):
    """300 cases drawn by seed 1 over the fast targets: each succeeds or is refused in one line."""
    only = [arg for target in FAST for arg in ("--only", target)]
    outcomes = fuzz(tmp_path, "--seed", str(seed), "--cases", "300", "--time-limit", "300", *only)
    assert len(outcomes) == 300
    bad = [c for c in outcomes if c["outcome"] not in CLEAN]
    assert not bad, _report(bad)
    assert {c["outcome"] for c in outcomes} == CLEAN  # the mutants reach both ends, not only the parsers
