"""One machine's share of a batch job, by the RANK / WORLD_SIZE that torchrun and SLURM arrays set.

Preprocessing and `infer --manifest` split their work the same way: machine r of W takes every W-th
item from the r-th, in the order every machine computes identically, so the shares never overlap and
together cover everything, without any coordination between machines. Training reads the same
variables (and torchrun's LOCAL_RANK) here: this module is the one reader of them.
"""
from __future__ import annotations

import os
from typing import Sequence, TypeVar

from .errors import Wav2LipError

T = TypeVar("T")


def rank_and_world(rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """The given rank and world size, else RANK / WORLD_SIZE from the environment (0 of 1)."""
    try:
        rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    except ValueError:
        raise Wav2LipError(f"RANK and WORLD_SIZE must be whole numbers, got RANK={os.environ.get('RANK')!r} "
                           f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise Wav2LipError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return rank, world


def local_rank() -> int:
    """The process's GPU index on its machine: LOCAL_RANK, which torchrun sets beside RANK (0 without it)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise Wav2LipError(f"LOCAL_RANK must be a whole number, got {os.environ.get('LOCAL_RANK')!r}") from None


def shard(items: Sequence[T], rank: int | None = None, world: int | None = None) -> list[T]:
    """This machine's share: every `world`-th item from `rank`."""
    rank, world = rank_and_world(rank, world)
    return list(items[rank::world])
