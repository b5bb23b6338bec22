"""Schedules are pure functions of (kind, start, end, progress): checked at hand-computed points."""

from __future__ import annotations

import math

import pytest

from distilmt.training.schedules import SCHEDULES, schedule_value


@pytest.mark.parametrize("kind, start, end, expected", [
    ("constant", 2.0, 1.0, (2.0, 2.0, 2.0)),
    ("linear", 2.0, 1.0, (2.0, 1.5, 1.0)),
    ("linear", 0.1, 0.3, (0.1, 0.2, 0.3)),            # a KD weight rising
    ("exponential", 4.0, 1.0, (4.0, 2.0, 1.0)),       # geometric mean at half-way: sqrt(4 * 1)
    ("cosine", 2.0, 1.0, (2.0, 1.5, 1.0)),
    ("cosine", 0.8, 0.6, (0.8, 0.7, 0.6)),            # a hard-label weight falling
])
def test_values_at_start_middle_and_end(kind, start, end, expected):
    got = tuple(schedule_value(kind, start, end, p) for p in (0.0, 0.5, 1.0))
    assert got == pytest.approx(expected, abs=1e-12)


def test_shapes_between_the_points():
    # cosine is slow at the ends: at a quarter it has moved (1 - cos(pi/4)) / 2 = 14.6% of the way, linear 25%.
    assert schedule_value("cosine", 2.0, 1.0, 0.25) == pytest.approx(1.0 + 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule_value("cosine", 2.0, 1.0, 0.25) == pytest.approx(1.8535534, abs=1e-7)
    assert schedule_value("linear", 2.0, 1.0, 0.25) == pytest.approx(1.75)
    assert schedule_value("exponential", 16.0, 1.0, 0.25) == pytest.approx(8.0)
    # progress outside [0, 1] is clamped: a step past max_steps keeps the final value
    for kind in SCHEDULES:
        assert schedule_value(kind, 3.0, 1.0, 1.7) == schedule_value(kind, 3.0, 1.0, 1.0)
        assert schedule_value(kind, 3.0, 1.0, -0.5) == 3.0


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        schedule_value("step", 1.0, 2.0, 0.5)
    with pytest.raises(ValueError, match="exponential schedule needs start and end > 0"):
        schedule_value("exponential", 0.0, 1.0, 0.5)
