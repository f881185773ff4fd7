"""Shared fixtures: the devices to run module tests on, and the hypothesis profile."""

import os

import pytest
import torch
from hypothesis import settings


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
