"""Resource guard: estimate memory and time before computing, refuse above a budget with the estimate."""

import math
import os
from dataclasses import dataclass

import torch

from noether.explorer.problems import ExplorerError, Problem

DEFAULT_MEMORY_FRACTION = 0.5
"""Share of the free memory a computation may plan to use by default."""
DEFAULT_TIME_BUDGET_S = 900.0
ATTENTION_SHARE_OF_MATMUL = 0.8
"""Attention layers run at about this share of the measured matmul speed."""


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_seconds(s: float) -> str:
    """A rough duration, as estimates are: whole milliseconds below a second."""
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


_DURATION_UNITS = ((1e-6, "ns", 1e9), (1e-3, "µs", 1e6), (1.0, "ms", 1e3), (120.0, "s", 1.0))


def format_duration(s: float) -> str:
    """A measured duration to three significant digits in a unit that keeps it under 1000 ("245 µs", "5.12 ms",
    "1.23 s"), so that a tiny layer's times read as numbers, not as "0 ms"; from two minutes on as ``format_seconds``.
    """
    if not math.isfinite(s) or s < 0:
        return "—"
    if s == 0:
        return "0 s"
    rounded = float(f"{s:.3g}")  # chosen after rounding, so 999.7 µs reads "1 ms", not "1e+03 µs"
    for limit, unit, scale in _DURATION_UNITS:
        if rounded < limit:
            return f"{rounded * scale:.3g} {unit}"
    return format_seconds(rounded)


@dataclass(frozen=True)
class Estimate:
    """Planned cost of one computation."""

    what: str
    bytes: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.what}: about {format_bytes(self.bytes)} of memory and {format_seconds(self.seconds)}"


def _available_host_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def available_memory(device: torch.device) -> int:
    """Free memory of the device (host memory for cpu and mps)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return _available_host_memory()


def memory_budget(device: torch.device, override_mb: float | None = None) -> int:
    """Bytes a computation may plan to use: ``override_mb`` if given, else a fraction of the free memory."""
    if override_mb is not None:
        return int(override_mb * 2**20)
    return int(available_memory(device) * DEFAULT_MEMORY_FRACTION)


def estimate_seconds(device: torch.device, flops: float, elements: float = 0.0, *, row_stats: bool = False) -> float:
    """Seconds for ``flops`` of matmul-like work plus ``elements`` attention scores through the weight pass (with
    row statistics or not), at this machine's measured speed (see :mod:`noether.explorer.calibration`)."""
    from noether.explorer.calibration import measured_speed

    if flops <= 0 and elements <= 0:
        return 0.0
    speed = measured_speed(device)
    per_element = speed.stats_elements_per_s if row_stats else speed.elements_per_s
    return flops / (speed.flops_per_s * ATTENTION_SHARE_OF_MATMUL) + elements / per_element


def check(estimate: Estimate, budget_bytes: int, time_budget_s: float = DEFAULT_TIME_BUDGET_S) -> None:
    """Raise ExplorerError (with the estimate) when ``estimate`` exceeds the memory or time budget."""
    if estimate.bytes > budget_bytes:
        raise ExplorerError(
            Problem(
                "resource guard",
                f"refused {estimate.what}: it needs about {format_bytes(estimate.bytes)} but the memory budget is "
                f"{format_bytes(budget_bytes)}.",
                "Reduce token counts or batch size, pick a coarser view, or raise the budget (--memory-budget MB).",
            )
        )
    if estimate.seconds > time_budget_s:
        raise ExplorerError(
            Problem(
                "resource guard",
                f"refused {estimate.what}: it would take about {format_seconds(estimate.seconds)} "
                f"(limit {format_seconds(time_budget_s)}).",
                "Reduce token counts or batch size, or use a faster device.",
            )
        )
