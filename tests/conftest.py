"""Shared fixtures: the devices to run module tests on, and the hypothesis profile."""

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import settings
from torch.overrides import TorchFunctionMode


def available_devices() -> list[str]:
    """Names of the torch devices this machine can run on: always "cpu", plus "cuda" and "mps" when present.

    Test files may use it directly, e.g. ``@pytest.mark.parametrize("device_name", available_devices())``.
    """
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


DEVICES: list[str] = available_devices()
"""The device names the ``device`` fixture is parametrised over."""


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each available device in turn."""
    return torch.device(request.param)


# Deterministic by default so that CI runs the same examples every time (no example database either);
# `HYPOTHESIS_PROFILE=thorough` explores more, randomly.
settings.register_profile("default", deadline=None, max_examples=50, derandomize=True, database=None, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=500, derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


FIXED_SPEED_VALUES = {"flops_per_s": 6.25e10, "elements_per_s": 4e8, "stats_elements_per_s": 1.6e8}
"""A fast 2-core CPU, as earlier measured here without other load."""


@pytest.fixture(autouse=True)
def fixed_speed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app gates and the guard refuses work by estimated time, from the machine's measured speed. Tests of
    anything but the estimates use one fixed speed, so that what they see does not depend on how busy the machine
    is; tests marked ``measured_speed`` measure it."""
    if request.node.get_closest_marker("measured_speed"):
        return
    from noether.explorer import calibration

    speed = calibration.Speed(**FIXED_SPEED_VALUES)
    monkeypatch.setattr(calibration, "measured_speed", lambda device: speed)


class TensorCounter(TorchFunctionMode):
    """While active (``with counter:``), counts torch calls and the bytes of the tensors they return.

    Tests bound these instead of time: a refusal that allocated a billion-token tensor shows up here whatever the
    load of the machine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.tensor_bytes = 0

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        self.calls += 1
        for value in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(value, torch.Tensor):
                self.tensor_bytes += value.numel() * value.element_size()
        return result


@pytest.fixture
def tensor_counter() -> TensorCounter:
    """A fresh TensorCounter; use it as a context manager around the work to count."""
    return TensorCounter()


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Streamlit caches outlive AppTest instances in one process; a test of the app starts cold and leaves none."""
    import streamlit as st  # here, so that tests without the app do not import streamlit

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()
