"""`wav2lip train-expert`, `wav2lip train` and `wav2lip distill`: the SyncNet expert, the Wav2Lip
generator and a compact student generator taught by a trained one.

Run under `torchrun --nproc-per-node N -m wav2lip train ...` for several GPUs or machines.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..constants import PRECISIONS
from ..io.files import check_folder
from ..lipsync.options import EXPERT_MODES
from ..shards import rank_and_world

if TYPE_CHECKING:
    from ..train import TrainConfig


def _common(parser: argparse.ArgumentParser, checkpoint_dir_help: str | None = None) -> None:
    parser.add_argument("--data-root", required=True, metavar="PREP",
                        help="prepared data (the layout `wav2lip preprocess` writes)")
    parser.add_argument("--checkpoint-dir", required=checkpoint_dir_help is None, metavar="DIR",
                        help=checkpoint_dir_help or "where checkpoints, log.jsonl and sample collages go")
    parser.add_argument("--config", metavar="FILE", help="JSON or TOML file of settings (flags win)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue from the latest checkpoint in DIR (starts fresh if there is none)")
    parser.add_argument("--init", metavar="PTH", help="start from these weights (fine-tuning); step 0, new optimizer")
    parser.add_argument("--steps", type=int, help="train until this many optimizer steps")
    parser.add_argument("--batch-size", type=int, help="samples per step per process")
    parser.add_argument("--lr", type=float, help="Adam learning rate (1e-4)")
    parser.add_argument("--width", type=float, help="channel scale of the networks (1.0 = the authors')")
    parser.add_argument("--eval-interval", type=int, help="steps between evaluations")
    parser.add_argument("--eval-batches", type=int,
                        help="validation batches per evaluation at most (one pass over the validation set if fewer)")
    parser.add_argument("--checkpoint-interval", type=int, help="steps between checkpoints")
    parser.add_argument("--log-interval", type=int, help="steps between log.jsonl records")
    parser.add_argument("--workers", type=int, help="data loader processes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=int, help="random seed of initialisation and sampling")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="autocast arithmetic: auto (default: bf16 or fp16 on CUDA, fp32 on the CPU), fp32, "
                             "bf16 (about 2x faster on a CPU with native bf16 from width 0.25 up) or fp16 (CUDA)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    expert = subparsers.add_parser(
        "train-expert", help="train the SyncNet lip-sync expert",
        description="Train the lip-sync expert on prepared data (spec section 7).",
    )
    _common(expert)
    expert.set_defaults(func=_run, recipe="expert")

    generator = subparsers.add_parser(
        "train", help="train the Wav2Lip generator with a frozen lip-sync expert",
        description="Train the Wav2Lip generator (spec section 8), optionally with the visual quality GAN.",
    )
    _common(generator)
    generator.add_argument("--expert", required=True, metavar="PTH",
                           help="trained lip-sync expert (stays frozen), a path or lipsync_expert.pth")
    generator.add_argument("--gan", action="store_true", default=None,
                           help="add the visual quality discriminator (wav2lip_gan recipe)")
    generator.add_argument("--init-disc", metavar="PTH", help="discriminator weights to start from (--gan)")
    generator.add_argument("--expert-mode", choices=EXPERT_MODES,
                           help="frozen expert's BatchNorm: train (default, as the reference) or eval")
    generator.add_argument("--mel-offset", type=int, metavar="STEPS", help=MEL_OFFSET_HELP)
    generator.set_defaults(func=_run, recipe="generator")

    student = subparsers.add_parser(
        "distill", help="distil a compact student generator from a trained one",
        description="Train a narrower (--width) generator, optionally without its residual blocks, to "
        "reproduce a frozen teacher's faces on any prepared talking-face data (L1 to the teacher, plus "
        "the expert's sync loss with --expert). The student records its layout and teacher: "
        "`wav2lip infer --checkpoint STUDENT.pth` needs no other flag.",
    )
    _common(student, checkpoint_dir_help="where checkpoints, log.jsonl and sample collages go "
            "(default: OUT's name + _checkpoints, beside it)")
    student.add_argument("--teacher", required=True, metavar="PTH",
                         help="the trained generator to learn from (stays frozen), a path or wav2lip_gan.pth")
    student.add_argument("--out", required=True, metavar="PTH",
                         help="the student generator, written once --steps is reached")
    student.add_argument("--no-residual", dest="residual", action="store_false", default=None,
                         help="leave out the generator's residual blocks (about half the convolutions)")
    student.add_argument("--expert", metavar="PTH",
                         help="add the frozen lip-sync expert's sync loss (switched on as in `train`)")
    student.add_argument("--expert-mode", choices=EXPERT_MODES,
                         help="frozen expert's BatchNorm: train (default, as the reference) or eval")
    student.add_argument("--feature-weight", type=float,
                         help="weight of the decoder attention-map loss beside the L1 (0: off)")
    student.add_argument("--mel-offset", type=int, metavar="STEPS", help=MEL_OFFSET_HELP)
    student.set_defaults(func=_run_distill, recipe="distill")


_FLAGS = ("data_root", "checkpoint_dir", "resume", "init", "steps", "batch_size", "lr", "width",
          "eval_interval", "eval_batches", "checkpoint_interval", "log_interval", "workers", "threads",
          "device", "seed", "precision", "progress", "expert", "gan", "init_disc", "expert_mode", "teacher",
          "residual", "feature_weight", "mel_offset")
MEL_OFFSET_HELP = ("start the model's mel window this many 12.5 ms steps from its frame's (default 0, the authors'); "
                   "-13 needs only 50 ms of audio after a frame: a student for `wav2lip live`, which reads it "
                   "from the checkpoint")


def _config(args: argparse.Namespace) -> TrainConfig:
    """The effective config: recipe defaults < --config file < the flags that were given."""
    from ..train import make_config  # torch loads only once a command runs

    return make_config(args.recipe, args.config, **{name: getattr(args, name, None) for name in _FLAGS})


def _print_last(metrics: dict[str, float]) -> None:
    if metrics and rank_and_world()[0] == 0:
        print("last evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


@contextlib.contextmanager
def _unmade_on_failure(folder: str | os.PathLike) -> Iterator[None]:
    """The checkpoint folder (and its parents) this run creates are removed again if the run fails before
    writing anything in them: a refused run leaves nothing behind (found by benchmarks/fuzz.py)."""
    path = Path(folder).absolute()
    made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for p in made:
            with contextlib.suppress(OSError):  # not empty: the run wrote something worth keeping
                p.rmdir()
        raise


def _run(args: argparse.Namespace) -> int:
    from ..train import train

    config = _config(args)
    with _unmade_on_failure(config.checkpoint_dir):
        check_folder(config.checkpoint_dir, "checkpoint folder", inputs=[config.data_root])
        _print_last(train(config))
    return 0


def _run_distill(args: argparse.Namespace) -> int:
    from ..train import default_checkpoint_dir, distill

    config = _config(args)
    if not config.checkpoint_dir:
        config.checkpoint_dir = str(default_checkpoint_dir(args.out))
    with _unmade_on_failure(config.checkpoint_dir):
        metrics, written = distill(config, args.out)
    _print_last(metrics)
    if written is not None:
        print(f"student: {written}")
    return 0
