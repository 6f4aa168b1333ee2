"""The package's import graph: no circles between modules, and no subpackage importing from a layer above
it (data flows one way: io -> models -> faces -> lipsync / evaluation -> data -> train -> serve / cli); and what
the command imports: `--help` and usage errors load neither torch, OpenCV nor PyAV (the API loads on first use)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "wav2lip"
# Lower numbers are lower layers; a module may import its own layer and those below.
LAYERS = {"errors": 0, "constants": 0, "device": 0, "store": 0, "shards": 0, "io": 1, "checkpoints": 2, "models": 2, "export": 3,
          "faces": 3, "lipsync": 4, "evaluation": 4, "data": 5, "train": 6, "serve": 7, "cli": 8, "__init__": 9,
          "__main__": 9}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the wav2lip modules it imports (at any depth of its code: lazy imports count too)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = [f"{a} -> {b}" for a, targets in imports().items() for b in targets
              if b != "wav2lip" and layer(b) > layer(a)]
    assert not upward, upward


def test_no_import_circles() -> None:
    graph = imports()
    # Package __init__ files re-export their modules; an edge into a package means its __init__.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    cycles = [c for c in cycles if not all(m == "wav2lip" or m.endswith("__init__") for m in c)]
    assert not cycles, cycles


HEAVY = {"torch", "cv2", "av", "numpy"}


def imported_by(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -m wav2lip ARGS` in a fresh interpreter; its result and every module it imported
    (from the -X importtime report, which names each module on its first import)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "wav2lip", *args], capture_output=True,
                          text=True, timeout=120)
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "wav2lip.cli" in modules  # the report is there: an empty one would prove nothing
    return done, modules


@pytest.mark.parametrize("args", [["--help"], ["infer", "--help"], ["distill", "--help"]])
def test_help_does_not_import_torch_opencv_or_pyav(args: list[str]) -> None:
    done, modules = imported_by(*args)
    assert done.returncode == 0 and "usage: wav2lip" in done.stdout, done.stderr[-2000:]
    assert not modules & HEAVY, sorted(modules & HEAVY)


@pytest.mark.parametrize("args", [["infer", "--no-such-flag"], ["infer", "--smooth", "wobbly"],
                                  ["infer", "--face", "a.mp4", "--audio", "b.wav", "--mask-top", "2"]])
def test_argument_errors_do_not_import_torch_opencv_or_pyav(args: list[str]) -> None:
    done, modules = imported_by(*args)
    assert done.returncode == 2 and "error" in done.stderr, done.stderr[-2000:]
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_the_public_api_loads_on_first_use() -> None:
    script = (
        "import sys, wav2lip\n"
        "assert not {'torch', 'cv2', 'av'} & set(sys.modules)\n"
        "import wav2lip.lipsync.options, wav2lip.lipsync.blend\n"  # the subpackage must not shadow the function
        "from wav2lip import LipSyncer, LiveSyncer, evaluate_sync, lipsync\n"
        "from wav2lip.lipsync import offline\n"
        "assert lipsync is wav2lip.lipsync is offline.lipsync and LipSyncer is offline.LipSyncer\n"
        "assert 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_light_names_are_the_ones_the_heavy_modules_implement() -> None:
    from wav2lip.constants import DETECTORS, SMOOTH_MODES
    from wav2lip.faces import detectors, smoothing
    from wav2lip.lipsync import blend, options

    assert tuple(detectors._BACKENDS) == DETECTORS
    assert tuple(blend.BLENDS) == options.BLEND_MODES
    for mode in SMOOTH_MODES:
        smoothing.make_smoother(mode)
