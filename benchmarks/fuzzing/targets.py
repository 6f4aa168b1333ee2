"""Targets: the command (and its options) that reads each kind of mutated input.

A target names a command and the role the mutant plays in it (`infer:face`, `infer:audio`, ...). Its
variants are argument lists with the mutant at M; `build` fills in the seeds, the case's folders and the
variant the case drew, so a case is the pure function (target, seed, variant, edits) and replays exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .seeds import BOX, WIDTH, Seed

M = "{mutant}"  # the mutated file (or folder, for data and raw-video seeds)


@dataclass(frozen=True)
class Paths:
    """Where a case runs: its inputs folder, output folder, and the seeds' paths by name."""

    case: Path
    seeds: dict[str, Seed]

    @property
    def inputs(self) -> Path:
        return self.case / "in"

    @property
    def out(self) -> Path:
        return self.case / "out"

    @property
    def home(self) -> Path:
        return self.case / "home"

    def seed(self, name: str) -> str:
        return str(self.seeds[name].path)


Variant = Callable[[Paths], list[str]]


@dataclass(frozen=True)
class Target:
    name: str  # command:role
    kinds: tuple[str, ...]  # the seed kinds whose mutants this role takes
    variants: tuple[Variant, ...]
    weight: float  # share of the campaign's cases
    batch: bool = False  # reports one line per item (manifest lines, folder videos), not one line in all
    resumable: bool = False  # a run that fails after some steps keeps their log and checkpoints (training)
    copies: tuple[str, ...] = ()  # seeds copied beside the mutant (a manifest's relative paths)

    @property
    def command(self) -> str:
        return self.name.split(":")[0]


def _model(p: Paths) -> list[str]:
    return ["--checkpoint", p.seed("generator.pth"), "--device", "cpu", "--precision", "fp32"]


def _infer(face: str, audio: str, *extra: str) -> Variant:
    def build(p: Paths) -> list[str]:
        f = face if face == M else p.seed(face)
        a = audio if audio == M else p.seed(audio)
        out = [str(p.out / "result.mp4")]
        return ["infer", "--face", f, "--audio", a, "-o", *out, *_model(p), "-q", *extra]
    return build


def _detect_on(p: Paths) -> list[str]:
    return ["--detector-weights", p.seed("retinaface.pth")]


def _with(variant: Variant, extra: Callable[[Paths], list[str]]) -> Variant:
    return lambda p: variant(p) + extra(p)


def _replace(variant: Variant, old: str, new: Callable[[Paths], str]) -> Variant:
    return lambda p: [new(p) if arg == old else arg for arg in variant(p)]


def _infer_checkpoint(p: Paths) -> list[str]:
    args = _infer("face.mp4", "speech.wav", "--box", *BOX)(p)
    args[args.index("--checkpoint") + 1] = M
    return args


_FACE_VARIANTS = (
    _infer(M, "speech.wav", "--box", *BOX),
    _with(_infer(M, "speech.wav", "--no-cache"), _detect_on),
    _infer(M, "speech.wav", "--box", *BOX, "--blend", "feather", "--loop", "pingpong"),
    _infer(M, "speech.wav", "--box", *BOX, "--static", "--fps", "10"),
    _replace(_infer(M, "speech.wav", "--box", *BOX, "--lossless", "-o", "LOSSLESS"), "LOSSLESS",
             lambda p: str(p.out / "result.mkv")),
    _replace(_infer(M, "speech.wav", "--box", *BOX, "--preview-frame", "3", "-o", "PREVIEW"), "PREVIEW",
             lambda p: str(p.out / "preview.png")),
)


def _evaluate(video: str, *extra: str, audio: str | None = None, model: str = "expert.pth") -> Variant:
    def build(p: Paths) -> list[str]:
        v = video if video == M else p.seed(video)
        m = f"expert:{M}" if model == M else f"expert:{p.seed(model)}"
        a = [] if audio is None else ["--audio", audio if audio == M else p.seed(audio)]
        return ["evaluate", v, *a, "--model", m, "--json", str(p.out / "scores.json"), "-q", "--batch-size", "4",
                *extra]
    return build


def _detect(video: str, *extra: str, weights: str = "retinaface.pth") -> Variant:
    def build(p: Paths) -> list[str]:
        v = video if video == M else p.seed(video)
        w = weights if weights == M else p.seed(weights)
        return ["detect", v, "--json", str(p.out / "boxes.json"), "--detector-weights", w, *extra]
    return build


def _live(face: str, audio: str, *extra: str) -> Variant:
    def build(p: Paths) -> list[str]:
        f = face if face == M else p.seed(face)
        a = audio if audio == M else p.seed(audio)
        return ["live", "--face", f, "--audio", a, "-o", str(p.out / "live.mp4"), *_model(p), "--box", *BOX,
                "--chunk", "0.1", *extra]
    return build


def _train(recipe: str, data: str = "dataset", *extra: str, expert: str = "expert.pth",
           config: str | None = None) -> Variant:
    def build(p: Paths) -> list[str]:
        d = data if data == M else str(p.inputs / "dataset")
        args = [f"train-{recipe}", "--data-root", d, "--checkpoint-dir", str(p.out / "ckpt"), "--no-progress"]
        if config is not None:  # --steps bounds the run whatever the file says (flags win over the file)
            args += ["--config", config if config == M else p.seed(config), "--steps", "1"]
        else:
            args += ["--steps", "1", "--batch-size", "2", "--width", str(WIDTH), "--workers", "0", "--threads", "1",
                     "--eval-interval", "1", "--eval-batches", "1", "--checkpoint-interval", "1", "--device", "cpu"]
        if recipe == "generator":
            args += ["--expert", expert if expert == M else p.seed(expert)]
        return args + list(extra)
    return build


SERVE = "@serve"  # argv[0] of a case the child sends to the campaign's server instead of running the CLI


def _serve(role: str) -> Variant:
    return lambda p: [SERVE, role, M, p.seed("face.mp4"), p.seed("speech.wav")]


TARGETS: tuple[Target, ...] = (
    Target("infer:face", ("video", "image"), _FACE_VARIANTS, 0.15),
    Target("infer:audio", ("audio", "video"), (_infer("face.mp4", M, "--box", *BOX),
                                             _infer("still.png", M, "--box", *BOX, "--silence", "off")), 0.10),
    Target("infer:checkpoint", ("generator",), (_infer_checkpoint,), 0.08),
    Target("infer:manifest", ("manifest",), (lambda p: ["infer", "--manifest", M, *_model(p), "-q", "--box", *BOX],),
           0.05, batch=True, copies=("face.mp4", "still.png", "speech.wav", "speech.mp3")),
    Target("infer:cache", ("cache",), (_with(_infer("face.mp4", "speech.wav"), _detect_on),), 0.05),
    Target("infer:detector", ("detector",), (_infer("face.mp4", "speech.wav", "--no-cache", "--detector-weights", M),),
           0.04),
    Target("infer:enhancer", ("enhancer",), (_infer("still.png", "speech.wav", "--box", *BOX, "--enhance", "gfpgan",
                                                    "--enhancer-weights", M, "--static"),), 0.02),
    Target("detect:video", ("video", "image"), (_detect(M), _detect(M, "--max-size", "64", "--smooth", "none"),
                                               _detect(M, "--tracks")), 0.08),
    Target("detect:detector", ("detector",), (_detect("face.mp4", weights=M),), 0.02),
    Target("evaluate:video", ("video", "image"), (_evaluate(M), _evaluate(M, audio="speech.wav")), 0.06),
    Target("evaluate:audio", ("audio", "video"), (_evaluate("face.mp4", audio=M),), 0.04),
    Target("evaluate:expert", ("expert", "generator"), (_evaluate("face.mp4", model=M),), 0.04),
    Target("preprocess:raw", ("raw",), (lambda p: ["preprocess", "--input-dir", M, "--output-dir",
                                                   str(p.out / "prep"), *_detect_on(p), "--device", "cpu", "-q"],),
           0.05, batch=True),
    Target("live:face", ("video", "image"), (_live(M, "speech.wav"), _live(M, "speech.wav", "--blend", "feather")),
           0.04),
    Target("live:audio", ("audio", "video"), (_live("still.png", M),), 0.02),
    Target("train:dataset", ("dataset",), (_train("expert", M), _train("generator", M)), 0.04, resumable=True),
    Target("train:config", ("config",), (_train("expert", config=M),), 0.03, resumable=True),
    Target("train:expert", ("expert", "generator"), (_train("generator", expert=M),), 0.02, resumable=True),
    Target("serve:form", ("form",), (_serve("form"),), 0.03),
    Target("serve:face", ("video", "image"), (_serve("face"),), 0.03),
    Target("serve:audio", ("audio", "video"), (_serve("audio"),), 0.02),
    Target("serve:live-start", ("start",), (_serve("live-start"),), 0.02),
    Target("serve:live-avatar", ("video", "image"), (_serve("live-avatar"),), 0.02),
    Target("serve:live-audio", ("pcm",), (_serve("live-audio"),), 0.01),
    Target("inspect:checkpoint", ("generator", "expert", "detector", "enhancer"),
           (lambda p: ["weights", "inspect", M],), 0.07),
)

BY_NAME = {t.name: t for t in TARGETS}


def select(only: list[str] | None) -> list[Target]:
    """The targets named (a command picks all its roles: `infer` or `infer:audio`)."""
    if not only:
        return list(TARGETS)
    chosen = [t for t in TARGETS if t.name in only or t.command in only]
    unknown = [o for o in only if o not in BY_NAME and o not in {t.command for t in TARGETS}]
    if unknown:
        raise SystemExit(f"fuzz: unknown target {', '.join(unknown)} (one of {', '.join(BY_NAME)})")
    return chosen


def argv(target: Target, variant: int, paths: Paths, mutant: Path) -> list[str]:
    return [str(mutant) if a == M else a.replace(f"expert:{M}", f"expert:{mutant}")
            for a in target.variants[variant](paths)]
