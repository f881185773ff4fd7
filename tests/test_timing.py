"""Measured times read as numbers at every scale, and a tiny layer's calls are repeated until a sample is measurable."""

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from noether.explorer.cost import MAX_CALLS_PER_SAMPLE, MIN_SAMPLE_S, BackendTiming, _median_time
from noether.explorer.guard import format_duration
from noether.explorer.views import backend_table

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (3.2e-9, "3.2 ns"),
        (4.5e-7, "450 ns"),
        (2.45e-5, "24.5 µs"),
        (2.45e-4, "245 µs"),
        (9.9996e-4, "1 ms"),  # rounds up into the next unit instead of "1e+03 µs"
        (0.0051234, "5.12 ms"),
        (0.2, "200 ms"),
        (1.234, "1.23 s"),
        (59.94, "59.9 s"),
        (600.0, "10 min"),
        (float("nan"), "—"),
        (-1.0, "—"),
    ],
)
def test_format_duration_keeps_three_significant_digits(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=1e-10, max_value=119.0))
def test_format_duration_is_a_short_number_close_to_the_value(seconds: float) -> None:
    text = format_duration(seconds)
    match = re.fullmatch(r"(\d+(?:\.\d+)?) (ns|µs|ms|s)", text)
    assert match, text
    number = float(match[1])
    assert 0 < number < 1000
    scale = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[match[2]]
    assert math.isclose(number * scale, seconds, rel_tol=5e-3)


def test_a_tiny_backend_time_is_not_shown_as_zero() -> None:
    rows = backend_table([BackendTiming("per-pattern MixedAttention", True, 3.7e-5, 0.0)])
    assert rows[0]["time"] == "37 µs"


class FakeClock:
    """A clock that each call of the timed function advances by a fixed step (no wall-clock time involved)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def run(self) -> torch.Tensor:
        self.calls += 1
        self.now += self.step
        return torch.zeros(1)


def test_fast_calls_are_repeated_within_each_sample() -> None:
    clock = FakeClock(step=1e-5)
    seconds, _ = _median_time(clock.run, CPU, repeats=3, clock=clock)
    per_sample = math.ceil(MIN_SAMPLE_S / 1e-5)
    assert clock.calls == 2 + 3 * per_sample  # warm-up, calibration, then the samples
    assert seconds == pytest.approx(1e-5)


def test_slow_calls_run_once_per_sample_without_a_calibration_call() -> None:
    clock = FakeClock(step=2 * MIN_SAMPLE_S)
    seconds, _ = _median_time(clock.run, CPU, repeats=4, clock=clock)
    assert clock.calls == 1 + 4
    assert seconds == pytest.approx(2 * MIN_SAMPLE_S)


def test_calls_per_sample_are_capped_when_the_clock_does_not_move() -> None:
    clock = FakeClock(step=0.0)
    seconds, _ = _median_time(clock.run, CPU, repeats=2, clock=clock)
    assert clock.calls == 2 + 2 * MAX_CALLS_PER_SAMPLE
    assert seconds == 0.0
