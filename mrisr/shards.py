"""Which scans this process takes: array-job shares and torchrun ranks.

A cohort's sorted scan list is dealt out twice: ``--shard K/N`` gives each
task of a cluster array job its share (nnU-Net's ``-part_id/-num_parts``),
and under ``torchrun`` each rank takes its own part of that share. The ranks
then exchange their records so that one of them can write the summary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any

from mrisr.errors import ConfigError

__all__ = [
    "check_shard",
    "distributed_env",
    "gather_records",
    "parse_shard",
    "rank_share",
    "take_shard",
]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), the K-th of N shares (1-based, as in array-job task ids).

    Raises:
        ConfigError: not two whole numbers with 1 <= K <= N.
    """
    parts = str(text).strip().split("/")
    whole = len(parts) == 2 and all(part.strip().isdigit() for part in parts)
    # Anything but two whole numbers becomes (0, 0), which check_shard refuses.
    k, n = (int(part) for part in parts) if whole else (0, 0)
    return check_shard(k, n, given=text)


def check_shard(k: int, n: int, *, given: object = None) -> tuple[int, int]:
    """Refuse a share other than whole numbers 1 <= K <= N; the one place this is decided.

    Args:
        k: the share, 1-based.
        n: the number of shares.
        given: what the user wrote (``"K/N"`` text), for the message; default ``"k/n"``.

    Returns:
        ``(k, n)`` as ints.

    Raises:
        ConfigError: as above.
    """
    if all(isinstance(v, Integral) and not isinstance(v, bool) for v in (k, n)) and 1 <= k <= n:
        return int(k), int(n)
    raise ConfigError(
        f"shard {given if given is not None else f'{k}/{n}'!r} is not K/N with 1 <= K <= N",
        expected="e.g. --shard 1/4 ... --shard 4/4 (shard=(1, 4) ... (4, 4) in Python)",
        fix="pass --shard ${SLURM_ARRAY_TASK_ID}/N with array ids 1..N",
    )


def take_shard(items: Sequence[Any], k: int, n: int) -> list[Any]:
    """The K-th of N disjoint shares of ``items``: items K-1, K-1+N, K-1+2N, ...

    Every item is in exactly one share, shares differ in size by at most one,
    and, dealt round-robin from a sorted list, each gets a mix of the folders.

    Raises:
        ConfigError: K and N not whole numbers with 1 <= K <= N (:func:`check_shard`).
    """
    k, n = check_shard(k, n)
    return list(items[k - 1 :: n])


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) that torchrun set; (0, 1, 0) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)))


def rank_share(shard: tuple[int, int] | None) -> tuple[int, int]:
    """This process's share as one (K, N): the rank-th of the torchrun ranks' shares of ``shard``.

    ``take_shard(take_shard(items, k, n), rank + 1, world)`` equals
    ``take_shard(items, k + n * rank, n * world)``.
    """
    rank, world, _ = distributed_env()
    k, n = shard or (1, 1)
    return k + n * rank, n * world


def gather_records(records: list[Any], world: int) -> list[Any]:
    """Every rank's records on every rank; returns once all ranks have finished."""
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        # gloo: the records are small Python objects; it also runs where the GPUs use NCCL.
        dist.init_process_group("gloo")
    try:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, records)
    finally:
        if started:
            dist.destroy_process_group()
    return [record for share in gathered for record in share]
