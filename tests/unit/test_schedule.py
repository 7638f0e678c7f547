"""The learning-rate schedule: warm-up, then constant or a half cosine, as a function of the global step."""

from __future__ import annotations

import pytest

from pokevq.train.schedule import FLOOR, learning_rate_at


def rate(step: int, schedule: str = "cosine", warmup: int = 10, total: int = 110) -> float:
    return learning_rate_at(step, peak=1e-3, schedule=schedule, warmup_steps=warmup, total_steps=total)


def test_warm_up_rises_linearly_to_the_peak():
    assert [rate(s) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])


def test_cosine_falls_from_the_peak_to_a_tenth_by_the_last_step_and_stays():
    assert rate(10) == pytest.approx(1e-3)
    assert rate(60) == pytest.approx(1e-3 * (FLOOR + (1 - FLOOR) / 2))
    assert rate(110) == pytest.approx(1e-3 * FLOOR) and rate(500) == pytest.approx(1e-3 * FLOOR)
    steps = [rate(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))


def test_constant_keeps_the_configured_rate_after_warm_up():
    assert rate(0, "constant", warmup=0) == rate(10_000, "constant", warmup=0) == pytest.approx(1e-3)
    assert rate(0, "constant", warmup=4) == pytest.approx(2.5e-4)
