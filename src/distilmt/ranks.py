"""Which process this is under ``torchrun --nproc_per_node N``, and how the processes wait for one another.

One process (``WORLD_SIZE`` unset or 1) is rank 0 of a world of one: every helper is then a no-op and the stages
run as they always did. Under torchrun the stages use these helpers so that

* what is built once (the splits, the tokenizer, a converted teacher, the final assembly of a shard store, every
  ``.complete`` marker, evaluation and the report) is built by rank 0 while the others wait (:func:`main_first`,
  :func:`on_main`), and the others then read it;
* what is built shard by shard (the teacher cache, the distilled corpus) is split: rank r builds shards
  r, r + N, r + 2N, ... (:func:`my_shards`);
* training is the Trainer's DDP, which reuses the process group :func:`init` made.

The waits go through a gloo group of their own (CPU-side, with a long timeout), so a rank that waits while rank 0
evaluates for an hour does not trip NCCL's watchdog. A failure on rank 0 inside :func:`on_main` or
:func:`main_first` reaches the others as a :class:`~distilmt.errors.RankError` instead of a hang.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import RankError

WAIT_TIMEOUT = timedelta(hours=12)
"""How long a rank waits for the others (rank 0 evaluating, converting, assembling) before giving up."""

T = TypeVar("T")
_wait_group = None


def world_size() -> int:
    """How many processes run the job (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (torchrun's ``RANK``; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine: the GPU it uses (torchrun's ``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_device() -> str:
    """Where this process runs its models by default: its GPU (``cuda:LOCAL_RANK``) when torch sees one, else the
    CPU."""
    return f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"


def is_main() -> bool:
    """True on rank 0, the process that writes what is written once and logs what would repeat."""
    return rank() == 0


def distributed() -> bool:
    return world_size() > 1


def init() -> bool:
    """Join the process group once (nccl with GPUs, else gloo) when there are several processes; idempotent.

    The Trainer (accelerate) finds the group initialised and reuses it. Each rank uses GPU ``LOCAL_RANK``, so
    ``"cuda"`` means that GPU. Ranks other than 0 log warnings and errors only (their info lines would repeat rank
    0's). Returns whether the job is distributed."""
    global _wait_group
    if not distributed():
        return False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=WAIT_TIMEOUT)
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        if not is_main():
            logging.getLogger("distilmt").setLevel(logging.WARNING)
    return True


def barrier() -> None:
    """Wait until every rank is here (nothing without torchrun)."""
    if init():
        dist.barrier(group=_wait_group)


def my_shards() -> slice:
    """The shards this rank builds of a store built shard by shard: r, r + N, r + 2N, ... (all of them alone)."""
    return slice(rank(), None, world_size())


def gather(value: T) -> list[T]:
    """``value`` of every rank, in rank order (``[value]`` alone); values must pickle."""
    if not init():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value, group=_wait_group)
    return values


def _share(outcome):
    """Rank 0's ``outcome`` on every rank (rank 0 passes it, the others receive it)."""
    box = [outcome]
    dist.broadcast_object_list(box, src=0, group=_wait_group)
    return box[0]


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def on_main(fn: Callable[[], T], what: str) -> T:
    """``fn()`` on rank 0 only, its (picklable) result returned on every rank once rank 0 is done.

    Every rank must call it at the same point. When ``fn`` fails on rank 0 it raises there as usual and the other
    ranks raise a RankError naming ``what``."""
    if not init():
        return fn()
    if is_main():
        try:
            result = fn()
        except BaseException as exc:
            _share(("failed", _failure(exc)))
            raise
        _share(("ok", result))
        return result
    status, result = _share(None)
    if status != "ok":
        raise RankError(f"rank {rank()}: rank 0 failed while {what} ({result}); its log says more")
    return result


@contextmanager
def main_first(what: str) -> Iterator[None]:
    """Rank 0 runs the block first; the others wait, then run it too (and find its work done: the splits and the
    tokenizer prepared, the teacher converted) — the block must skip what is already there. Every rank leaves the
    block together, so none runs ahead while another is still in it. A failure on rank 0 is a RankError on the
    others naming ``what``."""
    if not init():
        yield
        return
    if is_main():
        try:
            yield
        except BaseException as exc:
            _share(("failed", _failure(exc)))
            raise
        _share(("ok", None))
    else:
        status, message = _share(None)
        if status != "ok":
            raise RankError(f"rank {rank()}: rank 0 failed while {what} ({message}); its log says more")
        yield
    dist.barrier(group=_wait_group)


__all__ = ["WAIT_TIMEOUT", "barrier", "distributed", "gather", "init", "is_main", "local_rank", "main_first",
           "my_shards", "on_main", "rank", "world_size"]
