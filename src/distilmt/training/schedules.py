"""Schedules over training: a value moving from ``start`` to ``end`` as progress goes from 0 to 1.

Pure functions of plain numbers (no trainer, no state), used by :class:`distilmt.training.trainer.DistilTrainer` for the
temperature (``distill.temperature`` -> ``distill.temperature_final``) and the loss weights (``distill.alpha`` ->
``distill.alpha_final``, ``distill.beta`` -> ``distill.beta_final``). Progress is ``global_step / max_steps``:
0 in the first optimizer step, ``(max_steps - 1) / max_steps`` in the last; every micro-batch of one
accumulated step sees the same value.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "exponential", "cosine")


def schedule_value(kind: str, start: float, end: float, progress: float) -> float:
    """The scheduled value at ``progress`` in [0, 1] (clamped):

    - ``constant``: ``start`` throughout (``end`` is ignored);
    - ``linear``: ``start + (end - start) * progress``;
    - ``exponential``: ``start * (end / start) ** progress`` (geometric; both must be > 0);
    - ``cosine``: ``end + (start - end) * (1 + cos(pi * progress)) / 2`` (slow at both ends).
    """
    p = min(max(float(progress), 0.0), 1.0)
    if kind == "constant":
        return float(start)
    if kind == "linear":
        return start + (end - start) * p
    if kind == "exponential":
        if start <= 0 or end <= 0:
            raise ValueError(f"an exponential schedule needs start and end > 0, got {start} and {end}")
        return start * (end / start) ** p
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown schedule '{kind}'; choose from {', '.join(SCHEDULES)}")


__all__ = ["SCHEDULES", "schedule_value"]
