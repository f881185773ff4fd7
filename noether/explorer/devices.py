"""Honest device choice: what is available, what was asked for, and what is used."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceChoice:
    """The device a run uses, and a note when it differs from the request."""

    device: torch.device
    requested: str
    note: str | None = None


def available_devices() -> list[str]:
    """Devices this machine can run on, best first ("cpu" is always there)."""
    devices = []
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def device_options(current: str, available: Sequence[str]) -> list[str]:
    """ "auto" and the available devices, plus the scenario's own device when this machine lacks it."""
    options = ["auto", *available]
    return options if current in options or not isinstance(current, str) else [*options, current]


def device_label(device: str, available: Sequence[str]) -> str:
    if device == "auto":
        return f"auto (here: {available[0] if available else 'cpu'})"
    return device if device in available else f"{device} (not available here)"


def resolve_device(requested: str) -> DeviceChoice:
    """ "auto" picks cuda, then mps, then cpu; an absent device falls back to cpu with a note saying so."""
    available = available_devices()
    if requested == "auto":
        return DeviceChoice(torch.device(available[0]), requested)
    if requested in available:
        return DeviceChoice(torch.device(requested), requested)
    kind = requested.split(":")[0].upper()
    return DeviceChoice(
        torch.device("cpu"),
        requested,
        f"{kind} was requested ('{requested}') but is not available on this machine "
        f"(available: {', '.join(available)}); running on cpu instead.",
    )


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> tuple[torch.dtype, str | None]:
    """The torch dtype for ``name``; float16 on cpu runs as float32 (with a note) because CPU kernels lack it."""
    if name == "float16" and device.type == "cpu":
        return torch.float32, "float16 is poorly supported on cpu; running in float32 instead."
    if name == "float64" and device.type == "mps":
        return torch.float32, "mps has no float64; running in float32 instead."
    return DTYPES[name], None
