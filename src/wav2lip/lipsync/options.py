"""THE option table: every user-facing option is declared once, here, with its type, default, unit,
choices, help and the surfaces it belongs to.

Each option is a field of one of three dataclasses (`SyncOptions`: what one lip-sync run does,
`ModelOptions`: which models run it and where, `StreamOptions`: how live audio arrives), declared
with `option(...)`. Everything else is generated from those declarations: the argparse flags of
`wav2lip infer`, `live` and `serve` (`add_arguments`), the HTTP API's form parser and OpenAPI schema
(`parse_fields`, `json_schema`), the web pages' controls (`GET /api/options`, from `public_table`),
the README's option tables (`markdown_table`) and the value checks (`SyncOptions.check`).

Surfaces: "infer", "live" and "serve" are the commands; "jobs" is the HTTP job form and the web page;
"live_socket" is the Live page's WebSocket.

Standard library only (the names and defaults of heavier modules come from `wav2lip.constants` and
`lipsync.mask`): `wav2lip --help` and every usage error are built from this table without importing torch.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from ..constants import (DEFAULT_CRF, DEFAULT_PRESET, DETECT_EVERY, DETECTORS, DEVICES, MIN_SAMPLE_RATE,
                         PRECISIONS, SAMPLE_RATE, SMOOTH_MODES, video_container)  # noqa: F401 (video_container: offline's import)
from ..constants import LOOP_MODES as _SOURCE_LOOPS
from ..errors import Wav2LipError
from .mask import MASKS, MaskShape

BACKENDS = ("torch", "onnxruntime")  # onnxruntime: the exported fp32 generator, faster than torch fp32 on CPUs
BLEND_MODES = ("paste", "feather")  # the reference's hard rectangle, or a soft mask (blend.BLENDS does each)


# Mouth restoration after blending (lipsync.self_enhance.load_enhancer); the option also takes a fitted file.
ENHANCERS = ("none", "gfpgan", "self")
LOOP_MODES = tuple(m for m in _SOURCE_LOOPS if m != "none")  # a video shorter than the audio: again, or back and forth
EVALUATE_MODES = ("whole", "track")
EXPERT_MODES = ("eval", "train")
SYNTH_LAYOUTS = ("prepared", "videos")  # synth-data: the training layout, or videos for preprocess
SILENCE_MODES = ("still", "original", "off")  # what the mouth does where nobody speaks (kernel, vad)
SPEAKER_MODES = ("auto", "largest")  # which of several faces is lip-synced (faces.speaker)
MASK_KINDS = MASKS  # the feather blend's mask (blend.MaskShape)
PCM_FORMATS = ("s16le", "f32le")  # live: raw PCM on stdin, 16-bit integers or 32-bit floats, little-endian
# x264's presets, fastest first (x264 --fullhelp).
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
BOX_ORDER = ("top", "bottom", "left", "right")  # --box on every command line: the authors' order
BOX_METAVAR = tuple(word.upper() for word in BOX_ORDER)
REFERENCE_BATCH = 128  # the reference's generator batch (spec section 5)

SURFACES = ("infer", "live", "serve", "jobs", "live_socket")
RUN = frozenset({"infer", "live", "jobs", "live_socket"})  # per-run options: every lip-sync surface
FILE_RUN = frozenset({"infer", "live", "jobs"})  # ... that shape an encoded file (not the socket's JPEGs)
MODELS = frozenset({"infer", "live", "serve"})  # the models a process loads
MODEL_CHOICE = MODELS | {"jobs", "live_socket"}  # ... that a job or a live session may pick among the loaded


@dataclass(frozen=True)
class Option:
    """One option as every surface shows it."""

    name: str  # the Python and HTTP name; the CLI flag is --name-with-dashes
    kind: type  # bool, int, float, str, or tuple (`count` numbers of `item`)
    default: Any
    help: str
    label: str  # a few words for a page's control
    group: str  # "face", "frames", "mouth", "output", "models", "audio in"
    surfaces: frozenset[str]
    choices: tuple | None = None
    unit: str | None = None
    count: int | None = None
    item: type | None = None
    minimum: float | None = None
    maximum: float | None = None
    metavar: str | tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()  # the authors' spellings, accepted by the CLI and not shown
    flag: str | None = None  # the CLI flag, when not --name (a default-True bool's --no-...)
    noun: str | None = None  # what error messages call it, when not its name ("unknown enhancer ...")
    or_file: bool = False  # besides its choices, the path of a file: the command line's, never the server's

    def allows(self, value: Any) -> bool:
        """One of the choices, or with `or_file` a file's path (a name with a folder in it or ending .pth)."""
        return value in self.choices or self.or_file and isinstance(value, str) and (
            value.endswith(".pth") or "/" in value or "\\" in value)

    @property
    def what(self) -> str:
        return self.noun or self.name.replace("_", " ")

    @property
    def cli_flag(self) -> str:
        if self.flag:
            return self.flag
        return "--" + self.name.replace("_", "-")

    def describe_default(self) -> str:
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, tuple):
            return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.default)
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def parse(self, text: str) -> Any:
        """A value from text (a form field, a socket message): ValueError saying what was expected."""
        text = text.strip()
        if self.kind is bool:
            value = text.lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if text == "" and self.default is None:
            return None
        if self.kind is tuple:
            parts = text.replace(",", " ").split()
            if len(parts) != self.count:
                raise ValueError(f"expected {self.count} {'integers' if self.item is int else 'numbers'}: "
                                 f"{' '.join(self.metavar) if isinstance(self.metavar, tuple) else self.metavar}")
            return tuple(self.item(p) for p in parts)
        if self.kind is str:
            return text
        return self.kind(text)

    def check(self, value: Any) -> None:
        """Choices, ranges and finiteness: one line naming the option and the valid values."""
        if value is None:
            return
        if self.choices is not None and not self.allows(value):
            raise Wav2LipError(f"unknown {self.what} {value!r} (one of {', '.join(self.choices)})")
        numbers = value if isinstance(value, tuple) else (value,) if self.kind in (int, float) else ()
        if self.kind is tuple and len(value) != self.count:
            raise Wav2LipError(f"{self.what} needs {self.count} numbers, got {value}")
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                raise Wav2LipError(f"{self.what} must be a finite number, got {number}")
            if self.minimum is not None and number < self.minimum or self.maximum is not None and number > self.maximum:
                raise Wav2LipError(f"{self.what} must be {_range(self)}, got {value}")

    def public(self) -> dict:
        """What a page needs to build a control for it (GET /api/options)."""
        return {"name": self.name, "type": "tuple" if self.kind is tuple else self.kind.__name__,
                "default": list(self.default) if isinstance(self.default, tuple) else self.default,
                "choices": list(self.choices) if self.choices else None, "unit": self.unit, "count": self.count,
                "minimum": self.minimum, "maximum": self.maximum, "label": self.label, "help": self.help,
                "group": self.group, "placeholder": " ".join(self.metavar) if isinstance(self.metavar, tuple) else None}


def _range(opt: Option) -> str:
    if opt.minimum is not None and opt.maximum is not None:
        return f"between {opt.minimum:g} and {opt.maximum:g}"
    return f"at least {opt.minimum:g}" if opt.minimum is not None else f"at most {opt.maximum:g}"


def option(default: Any, help: str, *, label: str, group: str, surfaces: Iterable[str], kind: type | None = None,
           **meta: Any) -> Any:
    """A dataclass field carrying its option's declaration (see `Option`)."""
    declared = dict(help=help, label=label, group=group, surfaces=frozenset(surfaces), kind=kind, **meta)
    return field(default=default, metadata={"option": declared})



@dataclass
class SyncOptions:
    """What one lip-sync run does; defaults are the reference's where it has one (spec section 5)."""

    box: tuple[int, int, int, int] | None = option(
        None, "fixed face box for every frame, in pixels, in the authors' order TOP BOTTOM LEFT RIGHT: no "
        "detection, pads or smoothing", label="Fixed face box", group="face", surfaces=RUN, count=4, item=int,
        metavar=BOX_METAVAR, unit="pixels")
    pads: tuple[int, int, int, int] = option(
        (0, 10, 0, 0), "widen the detected box", label="Widen the face box", group="face", surfaces=RUN, count=4,
        item=int, metavar=BOX_METAVAR, unit="pixels")
    smooth: str = option("centered", "box smoothing: centered (lag-free), mean5 (the reference's), none",
                         label="Box smoothing", group="face", surfaces=RUN, choices=SMOOTH_MODES, noun="smoothing")
    detect_every: int = option(
        DETECT_EVERY, "full-frame detection every N frames, tracking in between; 1 = every "
        "frame, 0 = only when the track is lost", label="Full detection every", group="face", surfaces=RUN,
        unit="frames", minimum=0, metavar="N")
    calibration: tuple[float, float, float, float] | None = option(
        None, "map detector boxes: centre shift and size scale in box units (what `wav2lip detect --compare` "
        "prints)", label="Detector calibration", group="face", surfaces=RUN, count=4, item=float,
        metavar=("DX", "DY", "SX", "SY"))
    cache: bool = option(True, "reuse and store the face boxes of a video tracked before with the same settings",
                         label="Reuse face boxes", group="face", surfaces=RUN, flag="--no-cache")
    speaker: str = option(
        "auto", "several faces: auto follows, shot by shot, the one whose lips agree with the video's own "
        "soundtrack (needs a speaker model), else the largest", label="With several faces, lip-sync",
        group="face", surfaces=RUN, choices=SPEAKER_MODES, noun="speaker choice")
    face_index: int | None = option(None, "follow the I-th face from the left (0: leftmost)", label="Face number",
                                    group="face", surfaces=RUN, kind=int, minimum=0, metavar="I")
    face_at: tuple[float, float] | None = option(
        None, "follow the face nearest X Y", label="Face nearest", group="face", surfaces=RUN, count=2, item=float,
        metavar=("X", "Y"), unit="pixels")
    static: bool = option(False, "use only the first frame of the video", label="First frame only",
                          group="frames", surfaces=RUN)
    fps: float | None = option(None, "frame rate for a still image (default: 25); for a video, resample to this "
                               "rate", label="Frame rate", group="frames", surfaces=RUN, kind=float, minimum=1e-3,
                               maximum=120, unit="frames/s", metavar="FPS")
    resize_factor: int = option(1, "divide the video's width and height by N first", label="Downscale by",
                                group="frames", surfaces=RUN, minimum=1, metavar="N", aliases=("--resize_factor",))
    crop: tuple[int, int, int, int] = option(
        (0, -1, 0, -1), "crop the video after resizing; -1 = to the edge", label="Crop", group="frames",
        surfaces=RUN, count=4, item=int, metavar=BOX_METAVAR, unit="pixels")
    rotate: bool = option(False, "turn video frames 90 degrees clockwise (rotation metadata of phone videos is "
                          "honoured anyway)", label="Rotate 90°", group="frames", surfaces=RUN)
    loop: str = option("repeat", "a video shorter than the audio: repeat it, or play it back and forth (no jump)",
                       label="Video shorter than the speech", group="frames", surfaces=RUN, choices=LOOP_MODES, noun="loop mode")
    silence: str = option(
        "still", "where nobody speaks: still (closed, still mouth), original (the source frames), off (lip-sync to "
        "whatever sound is there, as the reference)", label="When nobody speaks", group="mouth", surfaces=RUN,
        choices=SILENCE_MODES, noun="silence mode")
    crossfade: int = option(3, "frames of crossfade at each edge of a pause", label="Crossfade at pauses",
                            group="mouth", surfaces=RUN, unit="frames", minimum=0, metavar="N")
    blend: str = option("paste", "paste: the reference's hard rectangle; feather: soft, colour-matched mouth",
                        label="Mouth blending", group="mouth", surfaces=RUN, choices=BLEND_MODES)
    mask: str = option("ellipse", "feather mask: ellipse (fixed in the box) or landmarks (mouth and jaw from "
                       "RetinaFace's five points; follows a tilted head)", label="Feather mask", group="mouth",
                       surfaces=RUN, choices=MASK_KINDS)
    mask_top: float = option(round(MaskShape.top, 4), "feather mask: where it starts, as a fraction of the box "
                             "height from its top; smaller reaches higher", label="Feather mask starts at",
                             group="mouth", surfaces=RUN, minimum=0.0, maximum=0.96, metavar="F")
    mask_softness: float = option(MaskShape.softness, "feather mask: fraction of its radius over which it fades",
                                  label="Feather edge softness", group="mouth", surfaces=RUN, minimum=0.01,
                                  maximum=1.0, metavar="F")
    colour_match: bool = option(True, "feather: match the generated colours to the surrounding skin",
                                label="Colour-match the mouth", group="mouth", surfaces=RUN,
                                flag="--no-colour-match", aliases=("--no-color-match",))
    enhance: str = option("none", "gfpgan: restore the painted mouth with GFPGAN v1.4 (sharper, slow on a CPU); "
                          "self: an enhancer fitted to this face video (minutes on first use, then cached); or the "
                          "PATH of a `wav2lip fit-enhancer` file", label="Restore the mouth", group="mouth",
                          surfaces=RUN, choices=ENHANCERS, noun="enhancer", or_file=True)
    enhance_strength: float = option(1.0, "mix of restored and plain mouth: 0 plain, 1 restored",
                                     label="Restoration strength", group="mouth", surfaces=RUN, minimum=0.0,
                                     maximum=1.0, metavar="S")
    batch_size: int = option(REFERENCE_BATCH, "generator batch size (lowered for big frames)",
                             label="Generator batch", group="output", surfaces=FILE_RUN, minimum=1, metavar="N",
                             aliases=("--wav2lip_batch_size",))
    lossless: bool = option(False, "FFV1 RGB in Matroska (.mkv): bit-exact frames", label="Lossless (.mkv)",
                            group="output", surfaces={"infer", "jobs"})
    crf: int = option(DEFAULT_CRF, "x264 quality: lower is better, 0 lossless", label="Quality (x264 CRF)",
                      group="output", surfaces=FILE_RUN, minimum=0, maximum=51, metavar="CRF")
    preset: str = option(DEFAULT_PRESET, "x264 preset: faster encodes, larger files", label="x264 preset",
                         group="output", surfaces=FILE_RUN, choices=X264_PRESETS, metavar="PRESET", noun="x264 preset")
    progress: bool = field(default=False, metadata={"internal": True})  # a tqdm bar on stderr (the CLI's -q)

    @classmethod
    def from_kwargs(cls, options: dict) -> SyncOptions:
        """Checked options from keyword arguments; an unknown name is one line listing the valid ones."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise Wav2LipError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                               f"(valid: {', '.join(names)})")
        result = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
        result.check()
        return result

    def check(self) -> None:
        for name, opt in SYNC_TABLE.items():
            opt.check(getattr(self, name))
        if self.calibration is not None and min(self.calibration[2:]) <= 0:
            raise Wav2LipError(f"calibration scales sx, sy must be positive, got {self.calibration}")
        try:
            self.mask_shape.check()
        except ValueError as exc:
            raise Wav2LipError(str(exc)) from None

    @property
    def mask_shape(self) -> MaskShape:
        return MaskShape(self.mask_top, self.mask_softness, self.colour_match, self.mask)


@dataclass
class ModelOptions:
    """Which models run, and where: what `LipSyncer` (and so `LiveSyncer` and the server) loads."""

    checkpoint: str = option("wav2lip_gan.pth", "generator weights: a file or a model-store name",
                             label="Generator", group="models", surfaces=MODELS, metavar="CKPT",
                             aliases=("--checkpoint_path",))
    detector: str = option("retinaface", "retinaface: fast; s3fd: the reference's detector, slow on a CPU",
                           label="Face detector", group="models", surfaces=MODEL_CHOICE, choices=DETECTORS, noun="face detector")
    detector_weights: str | None = option(None, "face detector weights: a file or a model-store name (default: the "
                                          "store's file for --detector)", label="Detector weights", group="models",
                                          surfaces=MODELS, kind=str, metavar="PATH")
    face_det_batch_size: int = option(16, "face detection batch size", label="Detection batch", group="models",
                                      surfaces=MODELS, minimum=1, metavar="N", aliases=("--face_det_batch_size",))
    device: str = option("auto", "torch device: auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, mps",
                         label="Device", group="models", surfaces=MODELS, choices=DEVICES)
    precision: str = option("auto", "generator arithmetic; auto: bf16 on CPUs with native bf16, fp16 on CUDA, "
                            "else fp32", label="Precision", group="models", surfaces=MODEL_CHOICE, choices=PRECISIONS)
    backend: str = option("torch", "generator runtime: torch, or onnxruntime (CPU, fp32; needs wav2lip[onnx])",
                          label="Runtime", group="models", surfaces=MODELS, choices=BACKENDS)
    speaker_model: str | None = option(None, "lip-sync expert that judges which of several faces speaks "
                                       "(a file or lipsync_expert.pth); without it the largest face is followed",
                                       label="Speaker model", group="models", surfaces=MODELS, kind=str,
                                       metavar="PTH")
    enhancer_weights: str | None = option(None, "GFPGAN v1.4 weights (default: the model store's GFPGANv1.4.pth)",
                                          label="Enhancer weights", group="models", surfaces=MODELS, kind=str,
                                          metavar="PATH")


@dataclass
class StreamOptions:
    """How live audio arrives (`wav2lip live`)."""

    pcm_format: str = option("s16le", "sample format of raw PCM on stdin (--audio -)", label="PCM format",
                             group="audio in", surfaces={"live"}, choices=PCM_FORMATS)
    sample_rate: int = option(SAMPLE_RATE, "sample rate of raw PCM on stdin (other rates are resampled)",
                              label="Sample rate", group="audio in", surfaces={"live"}, minimum=MIN_SAMPLE_RATE,
                              unit="Hz", metavar="HZ")
    chunk: float = option(0.02, "an audio file is played in chunks of this length", label="Chunk",
                          group="audio in", surfaces={"live"}, minimum=1e-3, unit="s", metavar="SECONDS")
    stall: float = option(0.1, "a source pausing this long mid-speech finishes the speech with silence",
                          label="Stall", group="audio in", surfaces={"live"}, minimum=1e-3, unit="s",
                          metavar="SECONDS")
    max_delay: float = option(0.2, "a frame running this far behind real time shows the last painted mouth "
                              "instead of a new one, so a slow machine loses frame rate, not latency (0: never)",
                              label="Max delay", group="audio in", surfaces={"live"}, minimum=0.0, unit="s",
                              metavar="SECONDS")


def _table_of(cls: type) -> dict[str, Option]:
    result = {}
    for f in fields(cls):
        if "option" in f.metadata:
            declared = dict(f.metadata["option"])
            kind = declared.pop("kind") or (tuple if declared.get("count") else type(f.default))
            result[f.name] = Option(name=f.name, kind=kind, default=f.default, **declared)
    return result


SYNC_TABLE = _table_of(SyncOptions)
MODEL_TABLE = _table_of(ModelOptions)
STREAM_TABLE = _table_of(StreamOptions)
TABLE: dict[str, Option] = {**SYNC_TABLE, **MODEL_TABLE, **STREAM_TABLE}
GROUPS = ("face", "frames", "mouth", "output", "models", "audio in")


def options_for(surface: str) -> list[Option]:
    """The options a surface exposes, in table order."""
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}")
    return [opt for opt in TABLE.values() if surface in opt.surfaces]


# ---------------------------------------------------------------- the command line


def add_arguments(parser: argparse.ArgumentParser, surface: str) -> None:
    """Every option of `surface` as a flag, in one argument group per option group."""
    groups: dict[str, Any] = {}
    for opt in options_for(surface):
        group = groups.get(opt.group) or groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        add_option(group, opt.name)


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **override: Any) -> None:
    """One option of the table as a flag (any command that takes it spells it this way); `override`
    changes argparse keywords where a command means something narrower (its own help text)."""
    opt = TABLE[name]
    kwargs: dict[str, Any] = {"dest": opt.name}
    if opt.kind is bool:
        text = opt.help if not opt.default else f"do not {opt.help[0].lower()}{opt.help[1:]}"
        kwargs.update(action="store_false" if opt.default else "store_true", help=text)
    else:
        unit = f" {opt.unit}" if opt.unit else ""
        default = "" if opt.default is None else f" (default: {opt.describe_default()}{unit})"
        kwargs.update(default=opt.default, help=opt.help + default,
                      type=opt.item if opt.kind is tuple else opt.kind)
        if opt.count:
            kwargs["nargs"] = opt.count
        if opt.choices and not opt.or_file:  # a file's path is checked with the rest (Option.check)
            kwargs["choices"] = opt.choices
        elif opt.choices:
            kwargs["metavar"] = "{" + ",".join(opt.choices) + "} or PATH"
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
    kwargs.update(override)
    kwargs["help"] = kwargs["help"].replace("%", "%%")
    negatives = [a for a in opt.aliases if a.startswith("--no-")]
    parser.add_argument(opt.cli_flag, *negatives, **kwargs)
    for alias in opt.aliases:
        if not alias.startswith("--no-"):
            parser.add_argument(alias, **{**kwargs, "help": argparse.SUPPRESS})


def from_namespace(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of `cls`'s options that the parser put on `args` (lists made tuples)."""
    values = {}
    for f in fields(cls):
        if "option" in f.metadata and hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


# ---------------------------------------------------------------- text forms (HTTP, WebSocket) and docs


def parse_fields(fields_: dict[str, str], surface: str) -> tuple[dict, dict]:
    """Text fields named as the options (a dashed spelling too) -> (SyncOptions arguments, model choices),
    checked; one line for an unknown name or a bad value."""
    known = {opt.name: opt for opt in options_for(surface)}
    run: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for raw, text in fields_.items():
        name = raw.replace("-", "_")
        if name not in known:
            raise Wav2LipError(f"unknown option {raw!r} (known: {', '.join(known)})")
        opt = known[name]
        try:
            value = opt.parse(str(text))
        except ValueError as exc:
            raise Wav2LipError(f"{raw}={str(text)[:40]!r}: {exc}") from None
        opt.check(value)
        (run if name in SYNC_TABLE else models)[name] = value
    SyncOptions.from_kwargs(run)
    return run, models


def json_schema(opt: Option) -> dict:
    """The option as an OpenAPI property of a multipart form (tuples are text: numbers apart by spaces)."""
    if opt.kind is tuple:
        schema: dict[str, Any] = {"type": "string", "example": " ".join(map(str, opt.default or (0,) * opt.count))}
    else:
        schema = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[opt.kind]}
        if opt.default is not None:
            schema["default"] = opt.default
        if opt.choices:
            schema["enum"] = list(opt.choices)
        if opt.minimum is not None:
            schema["minimum"] = opt.minimum
        if opt.maximum is not None:
            schema["maximum"] = opt.maximum
    unit = f" ({opt.unit})" if opt.unit else ""
    return {**schema, "description": opt.help + unit}


def public_table(surface: str) -> list[dict]:
    return [opt.public() for opt in options_for(surface)]


def markdown_table(surface: str) -> str:
    """The README's table of a command's options."""
    lines = ["| option | default | values | what it does |", "|---|---|---|---|"]
    for opt in options_for(surface):
        if opt.kind is bool:
            flag, default = f"`{opt.cli_flag}`", "off"
        else:
            meta = opt.metavar if isinstance(opt.metavar, str) else " ".join(opt.metavar or ())
            flag = f"`{opt.cli_flag}{' ' + meta if meta else ''}`"
            default = f"`{opt.describe_default()}`" + (f" {opt.unit}" if opt.unit and opt.default is not None else "")
        values = ", ".join(opt.choices) if opt.choices else (_range(opt) if opt.minimum is not None or
                                                              opt.maximum is not None else "")
        text = opt.help if not (opt.kind is bool and opt.default) else f"do not {opt.help[0].lower()}{opt.help[1:]}"
        lines.append(f"| {flag} | {default} | {values} | {text.replace('|', '/')} |")
    return "\n".join(lines)


def fill_markdown(text: str) -> str:
    """`text` with every `<!-- options: SURFACE -->` ... `<!-- /options -->` block regenerated."""
    out: list[str] = []
    lines = iter(text.split("\n"))
    for line in lines:
        out.append(line)
        if line.startswith("<!-- options: ") and line.endswith(" -->"):
            surface = line[len("<!-- options: "):-len(" -->")]
            for rest in lines:
                if rest == "<!-- /options -->":
                    break
            out += [markdown_table(surface), "<!-- /options -->"]
    return "\n".join(out)


# ---------------------------------------------------------------- shared checks


def check_choice(value: object, choices: Iterable[str], what: str) -> None:
    """One line naming the valid values when `value` is not one of them."""
    choices = tuple(choices)
    if value not in choices:
        raise Wav2LipError(f"unknown {what} {value!r} (one of {', '.join(choices)})")


def check_finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise Wav2LipError(f"{what} must be a finite number, got {value}")


def main(argv: list[str] | None = None) -> None:
    """`python -m wav2lip.lipsync.options FILE.md ...`: regenerate the option tables in those files."""
    import sys

    for name in argv if argv is not None else sys.argv[1:]:
        path = Path(name)
        path.write_text(fill_markdown(path.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
