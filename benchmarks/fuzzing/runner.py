"""The fork server: the parent has imported torch and wav2lip once; each case runs in a forked child with
a memory limit (RLIMIT_AS), one thread, its own TMPDIR and model-store folder, stdout and stderr in files,
and `wav2lip.cli.main(argv)` as its whole life. The parent enforces the time limit (the child's process
group is killed: a hang), takes the peak memory from wait4, and judges the outcome from the exit status,
stderr, the output folder, stray temporary files and the inputs' hashes.

Forking is safe because the parent never starts a thread: OMP/BLAS pools are held at one thread before
torch is imported (benchmarks/fuzz.py), and all work that runs torch (the seeds) happens in a child too.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import mutate, serve, targets
from .seeds import Seed

MEMORY_LIMIT = 4 << 30  # bytes of address space per case (the campaign's bound: a bomb must be refused)
# Outcomes, best first; everything from TRACEBACK on is a defect.
SUCCESS, REFUSED = "success", "refused"
TRACEBACK, HANG, CRASH, MEMORY = "traceback", "hang", "crash", "memory"
LEFTOVER, CHANGED, NOISY = "leftover", "input changed", "noisy refusal"
OUTCOMES = [SUCCESS, REFUSED, TRACEBACK, HANG, CRASH, MEMORY, LEFTOVER, CHANGED, NOISY]
FAILURES = OUTCOMES[2:]
_TORCH_CACHES = ("torchinductor_",)  # torch's own compile cache in TMPDIR: kept by design, not ours
# Allocation failures of Python, C++ and torch. Not FFmpeg's ENOMEM ("Cannot allocate memory"): FFmpeg caps each
# allocation itself (av_max_alloc) and a damaged header asking past it is refused as a damaged file, with or
# without our limit (checked on the first such case: 272 MB peak with no limit at all).
_MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "can't allocate memory", "out of memory", "DefaultCPUAllocator")


@dataclass
class Case:
    """One mutant through one target: a pure function of these fields (replayable from a saved JSON)."""

    target: str
    seed: str
    member: str  # the file mutated inside a folder seed ("" for a file seed)
    variant: int
    edits: list[mutate.Edit]
    mutators: list[str] = field(default_factory=list)
    index: int = -1

    def light(self) -> Case:
        """The case without its edits' bytes (kept for the JSON summary of passing cases)."""
        edits = [mutate.Edit(e.offset, e.cut, e.insert[:64]) for e in self.edits]
        return Case(self.target, self.seed, self.member, self.variant, edits, self.mutators, self.index)

    def to_json(self) -> dict:
        data = asdict(self)
        data["edits"] = [{"offset": e.offset, "cut": e.cut,
                          "insert": base64.b64encode(zlib.compress(e.insert, 9)).decode()} for e in self.edits]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Case:
        edits = [mutate.Edit(e["offset"], e["cut"], zlib.decompress(base64.b64decode(e["insert"])))
                 for e in data["edits"]]
        return cls(data["target"], data["seed"], data["member"], data["variant"], edits, data.get("mutators", []),
                   data.get("index", -1))


@dataclass
class Result:
    outcome: str
    code: int | None
    seconds: float
    peak_mb: float
    detail: str  # the last stderr lines, or what was left behind / changed


def draw(seed: int, index: int, chosen: list[targets.Target], seeds: dict[str, Seed]) -> Case:
    """Case `index` of campaign `seed`: target by weight, a seed of a kind it reads, a variant, mutations."""
    rng = np.random.default_rng([seed, index])
    weights = np.array([t.weight for t in chosen])
    target = chosen[int(rng.choice(len(chosen), p=weights / weights.sum()))]
    candidates = sorted(n for n, s in seeds.items() if s.kind in target.kinds)
    name = candidates[int(rng.integers(len(candidates)))]
    source = seeds[name].path
    member = ""
    if source.is_dir():
        files = sorted(str(p.relative_to(source)) for p in walk(source) if p.is_file())
        member = files[int(rng.integers(len(files)))]
        source = source / member
    data = source.read_bytes()
    siblings = sorted(n for n, s in seeds.items() if s.kind == seeds[name].kind and n != name and s.path.is_file())
    other = seeds[siblings[int(rng.integers(len(siblings)))]].path.read_bytes() if siblings else b""
    _, edits, names = mutate.mutate(data, rng, other)
    return Case(target.name, name, member, int(rng.integers(len(target.variants))), edits, names, index)


def walk(folder: Path) -> list[Path]:
    """Everything under `folder`, without recursion: a mutant may direct an output thousands of folders deep,
    past what rglob's nested generators (or shutil.rmtree) survive. Paths the OS refuses are skipped."""
    found, stack = [], [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            found.append(Path(entry.path))
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return sorted(found)


def remove(path: Path) -> None:
    """Remove a case folder, however deep a mutant made it (shutil.rmtree recurses once per level)."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def _digest(path: Path) -> str:
    if path.is_dir():
        return "folder:" + ",".join(f"{p.relative_to(path)}={_digest(p)}" for p in walk(path)
                                     if p.is_file())
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare(case: Case, case_dir: Path, seeds: dict[str, Seed]) -> tuple[list[str], dict[str, str], dict[Path, str]]:
    """Lay out the case's folders and mutant; return its argv, extra environment and input digests."""
    target = targets.BY_NAME[case.target]
    seed = seeds[case.seed]
    if case_dir.exists():
        remove(case_dir)
    paths = targets.Paths(case_dir, seeds)
    for folder in (paths.inputs, paths.out, paths.home, case_dir / "tmp"):
        folder.mkdir(parents=True)
    for name in target.copies:
        shutil.copyfile(seeds[name].path, paths.inputs / name)
    if seed.kind == "cache":  # the mutant is the entry the run looks up
        (paths.home / "detections").mkdir()
        mutant = paths.home / "detections" / seed.path.name  # the entry's own name: its key on this machine
        mutant.write_bytes(mutate.apply_edits(seed.path.read_bytes(), case.edits))
        target_arg = mutant
    elif seed.path.is_dir():
        target_arg = paths.inputs / seed.name
        shutil.copytree(seed.path, target_arg)
        mutant = target_arg / case.member
        mutant.write_bytes(mutate.apply_edits(mutant.read_bytes(), case.edits))
    else:
        mutant = target_arg = paths.inputs / seed.name
        mutant.write_bytes(mutate.apply_edits(seed.path.read_bytes(), case.edits))
    if target.name.startswith("train:") and seed.kind != "dataset":
        shutil.copytree(seeds["dataset"].path, paths.inputs / "dataset")
    args = targets.argv(target, case.variant, paths, target_arg)
    # Each input file as it was (new files beside them are outputs a manifest may direct there, not changes).
    watched = {p: _digest(p) for p in walk(paths.inputs) if p.is_file()}
    if seed.kind != "cache":  # a damaged cache entry is replaced by design
        watched[mutant] = _digest(mutant)
    root = os.path.commonpath([str(s.path) for s in seeds.values()])
    for arg in args:  # the seeds the command reads in place
        value = arg.removeprefix("expert:")
        if value.startswith(root) and Path(value).exists():
            watched[Path(value)] = _digest(Path(value))
    env = {"WAV2LIP_HOME": str(paths.home), "TMPDIR": str(case_dir / "tmp"), "WAV2LIP_OFFLINE": "1"}
    return args, env, watched


def _child(args: list[str], case_dir: Path, env: dict[str, str], memory: int) -> None:
    """In the forked child: limits, environment, redirected output, then the command; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.chdir(case_dir)
        os.environ.update(env)
        import tempfile

        tempfile.tempdir = None  # the parent may have cached its own
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(case_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        import torch

        torch.set_num_threads(1)
        if args[0] == targets.SERVE:
            code = serve.run_case(args[1], *(Path(a) for a in args[2:5]), case_dir / "verdict.json")
        else:
            from wav2lip.cli import main

            code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


@dataclass
class Running:
    pid: int
    started: float


def start(args: list[str], case_dir: Path, env: dict[str, str], memory: int = MEMORY_LIMIT) -> Running:
    pid = os.fork()
    if pid == 0:
        _child(args, case_dir, env, memory)
    return Running(pid, time.monotonic())


def poll(run: Running, limit_s: float) -> tuple[int | None, float, bool] | None:
    """(wait status, peak MB, timed out) once the child is gone; None while it runs within its time."""
    pid, status, usage = os.wait4(run.pid, os.WNOHANG)
    if pid == 0:
        if time.monotonic() - run.started <= limit_s:
            return None
        for sig in (signal.SIGKILL,):
            try:
                os.killpg(run.pid, sig)
            except ProcessLookupError:
                pass
        pid, status, usage = os.wait4(run.pid, 0)
        return status, usage.ru_maxrss / 1024, True
    try:  # grandchildren (DataLoader or preprocess workers) go with it
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return status, usage.ru_maxrss / 1024, False


def _stray(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in walk(folder)
                  if ".part" in p.name or p.name.endswith(".probe"))


def judge(case: Case, case_dir: Path, status: int | None, peak_mb: float, timed_out: bool, seconds: float,
          watched: dict[Path, str], memory: int = MEMORY_LIMIT) -> Result:
    """The case's outcome: the worst of what the exit, stderr, folders and inputs say."""
    target = targets.BY_NAME[case.target]
    stderr = (case_dir / "stderr").read_text(errors="replace") if (case_dir / "stderr").exists() else ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    tail = " | ".join(lines[-3:])[-600:]
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    if timed_out:
        return Result(HANG, None, seconds, peak_mb, tail)
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return Result(CRASH, code, seconds, peak_mb, f"killed by {name}; {tail}")
    if target.command == "serve":  # the client child's verdict on what the server answered
        verdict_file = case_dir / "verdict.json"
        if verdict_file.exists() and "Traceback" not in stderr:
            verdict = json.loads(verdict_file.read_text())
            return Result(verdict["outcome"], code, seconds, peak_mb, verdict["detail"])
    if peak_mb * 2**20 > memory or any(sign in stderr for sign in _MEMORY_SIGNS):
        return Result(MEMORY, code, seconds, peak_mb, tail)
    if "Traceback (most recent call last)" in stderr:
        at = stderr.rfind("Traceback (most recent call last)")
        return Result(TRACEBACK, code, seconds, peak_mb, stderr[at:].strip().splitlines()[-1][-300:] + " @ "
                      + _last_frame(stderr[at:]))
    changed = [str(p) for p, digest in watched.items() if not p.exists() or _digest(p) != digest]
    if changed:
        return Result(CHANGED, code, seconds, peak_mb, ", ".join(changed))
    stray = _stray(case_dir / "in") + _stray(case_dir / "out") + _stray(case_dir / "home")
    stray += [f"tmp/{p.name}" for p in (case_dir / "tmp").iterdir() if not p.name.startswith(_TORCH_CACHES)]
    if code != 0:  # a batch command keeps what its good items made, training what its finished steps wrote
        everything = walk(case_dir / "out")
        parents = {p.parent for p in everything}
        stray += [f"out/{p.relative_to(case_dir / 'out')}" for p in everything
                  if (not (target.batch or target.resumable) and p.is_file()) or (p.is_dir() and p not in parents)]
    if stray:
        return Result(LEFTOVER, code, seconds, peak_mb, ", ".join(stray[:5]))
    if code == 0:
        return Result(SUCCESS, code, seconds, peak_mb, tail)
    errors = [line for line in lines if "error" in line]
    one_error = len(errors) == 1 and lines[-1] == errors[0]  # warnings may come before it, nothing after
    if not lines or not (one_error or target.batch):
        return Result(NOISY, code, seconds, peak_mb, tail)
    return Result(REFUSED, code, seconds, peak_mb, tail)


def _last_frame(text: str) -> str:
    frames = [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]
    return frames[-1] if frames else ""


def run_one(case: Case, case_dir: Path, seeds: dict[str, Seed], limit_s: float) -> Result:
    """Run one case to its end (used to re-run hangs alone and to minimise failures)."""
    args, env, watched = prepare(case, case_dir, seeds)
    run = start(args, case_dir, env)
    while (done := poll(run, limit_s)) is None:
        time.sleep(0.01)
    status, peak, timed_out = done
    return judge(case, case_dir, status, peak, timed_out, time.monotonic() - run.started, watched)


def minimise(case: Case, result: Result, case_dir: Path, seeds: dict[str, Seed], limit_s: float) -> Case:
    """Fewer and smaller edits that still give the same outcome: drop edits one by one, then halve the
    biggest insertion while it still fails the same way."""
    def same(candidate: Case) -> bool:
        return run_one(candidate, case_dir, seeds, limit_s).outcome == result.outcome

    edits = list(case.edits)
    i = 0
    while len(edits) > 1 and i < len(edits):
        trial = edits[:i] + edits[i + 1:]
        if same(Case(case.target, case.seed, case.member, case.variant, trial, case.mutators, case.index)):
            edits = trial
        else:
            i += 1
    for _ in range(8):
        big = max(range(len(edits)), key=lambda k: len(edits[k].insert))
        if len(edits[big].insert) < 64:
            break
        e = edits[big]
        trial = edits[:big] + [mutate.Edit(e.offset, e.cut, e.insert[: len(e.insert) // 2])] + edits[big + 1:]
        if not same(Case(case.target, case.seed, case.member, case.variant, trial, case.mutators, case.index)):
            break
        edits = trial
    return Case(case.target, case.seed, case.member, case.variant, edits, case.mutators, case.index)


def save(case: Case, result: Result, folder: Path) -> Path:
    """The case as a small JSON regression file named by its target and content."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**case.to_json(), "found": {"outcome": result.outcome, "detail": result.detail}}
    body = json.dumps(data, indent=1, sort_keys=True)
    name = f"{case.target.replace(':', '-')}-{hashlib.sha256(json.dumps(case.to_json()).encode()).hexdigest()[:10]}"
    path = folder / f"{name}.json"
    path.write_text(body + "\n")
    return path
