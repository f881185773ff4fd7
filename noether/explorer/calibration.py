"""This machine's measured speed, once per process and device, so that time estimates come from measurements.

Two numbers: the sustained FLOP/s of a small matmul (forward passes, dense and flex backends), and the attention
scores per second of the real chunked weight pass on a small layer (weight maps with and without row statistics).
"""

import time
from dataclasses import dataclass

import torch

_SPEEDS: dict[str, "Speed"] = {}


@dataclass(frozen=True)
class Speed:
    """Measured throughput of one device."""

    flops_per_s: float
    """Sustained FLOP/s of a float32 matmul."""
    elements_per_s: float
    """Attention scores per second through the weight pass without row statistics."""
    stats_elements_per_s: float
    """The same with entropy and top-k mass per row."""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _best_of(run: object, device: torch.device, repeats: int = 3, warm_up: bool = True) -> float:
    assert callable(run)
    if warm_up:
        run()  # first calls allocate and pick kernels
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-6)


def _matmul_speed(device: torch.device) -> float:
    size = 512 if device.type == "cpu" else 2048
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    return 2.0 * size**3 / _best_of(lambda: a @ b, device, 5)


def _weight_pass_speeds(device: torch.device) -> tuple[float, float]:
    """Scores per second of :func:`attention_weight_maps` at AB-UPT width (192 dims, 3 heads).

    The queries read a long cached group, as in big layers: per query row there are thousands of scores, so the
    measurement is of the per-score cost, not of the query projection or the maps' fixed cost.
    """
    from noether.explorer.layout import PoolGrid, TokenLayout
    from noether.explorer.scenario import validate_scenario
    from noether.explorer.weights import WeightOptions, attention_weight_maps
    from noether.modeling.modules.attention import MixedAttention, MixedAttentionConfig

    queries, keys = (256, 4096) if device.type == "cpu" else (2048, 65536)
    report = validate_scenario(
        {
            "attention": {"kind": "mixed", "hidden_dim": 192, "num_heads": 3},
            "token_specs": [{"queries": queries}, {"cache": None}],
            "attention_patterns": [{"query_tokens": ["queries", "cache"], "key_value_tokens": ["cache"]}],
            "run": {"kv_cache_sizes": {"cache": keys}},
        }
    )
    assert report.scenario is not None
    layout = TokenLayout.from_scenario(report.scenario)
    generator = torch.Generator().manual_seed(0)
    core = MixedAttention(MixedAttentionConfig(hidden_dim=192, num_heads=3)).to(device).eval()
    x = torch.randn(1, queries, 192, generator=generator).to(device)
    cached = {"cache": torch.randn(1, 3, keys, 64, generator=generator).to(device)}
    rows, cols = PoolGrid.fit(layout.n_queries, 1024), PoolGrid.fit(layout.n_keys, 1024)
    elements = 3 * queries * keys
    chunk = WeightOptions().chunk_bytes if device.type == "cpu" else 256 * 2**20  # as the runs use it
    speeds = []
    for stats in (False, True):
        options = WeightOptions(row_stats=stats, chunk_bytes=chunk)

        def one_pass(options: WeightOptions = options) -> None:
            attention_weight_maps(core, layout, x, None, cached, rows, cols, options)

        seconds = _best_of(one_pass, device, 5, warm_up=not stats)
        speeds.append(elements / seconds)
    return speeds[0], speeds[1]


def measured_speed(device: torch.device, *, remeasure: bool = False) -> Speed:
    """The device's speed, measured on first use (a fraction of a second on a CPU) and kept for the process.

    ``remeasure`` takes a new measurement, for a comparison that needs the speed of the machine as it is now.
    """
    key = str(device)
    if remeasure or key not in _SPEEDS:
        plain, stats = _weight_pass_speeds(device)
        _SPEEDS[key] = Speed(_matmul_speed(device), plain, stats)
    return _SPEEDS[key]
