"""A recorded layer against the same layer on generated inputs: the engine must be as fast and as lean on both.

Usage: python -m benchmarks.capture_layer [--quick] [--repeats N]

One MixedAttention layer (two-branch self-anchor patterns, RoPE on, hidden 192, 3 heads) is recorded with
``capture_attention`` and opened with ``load_capture``. Reported in one run (best of the repeats):
- file size, time to open the capture (header, manifest, tensors, NaN/inf and shape checks);
- preparing the run and verifying the layer (its forward against the recorded output, max |diff|);
- the pooled weight maps + statistics of the recorded layer / of the same scenario on generated inputs (ratio);
- peak RSS growth during each weight pass (sampled), captured / generated.
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import peak_extra_rss, timed
from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.explorer.capture import capture_attention
from noether.explorer.capture_file import load_capture
from noether.explorer.capture_layers import capture_layers, layer_run, verify_layer
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import scenario_to_dict
from noether.modeling.modules.attention import MixedAttention, MixedAttentionConfig
from noether.modeling.modules.layers import RopeFrequency

HIDDEN, HEADS = 192, 3


def peak_growth(action: Callable[[], Any]) -> tuple[float, int]:
    """Seconds and peak RSS growth (sampled every 5 ms) of ``action``."""
    seconds = 0.0

    def timed_action() -> None:
        nonlocal seconds
        seconds = timed(action)

    growth, _ = peak_extra_rss(timed_action, every_s=0.005)
    return seconds, growth


def record(path: Path, per_group: int) -> Path:
    torch.manual_seed(0)
    module = MixedAttention(MixedAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True)).eval()
    names = ["surface_anchors", "surface_queries", "volume_anchors", "volume_queries"]
    specs = [TokenSpec(name=name, size=per_group) for name in names]
    patterns = [
        AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"]),
        AttentionPattern(query_tokens=["volume_anchors", "volume_queries"], key_value_tokens=["volume_anchors"]),
    ]
    positions = torch.rand(1, 4 * per_group, 3)
    rope = RopeFrequency(RopeFrequencyConfig(hidden_dim=HIDDEN // HEADS, input_dim=3, implementation="complex"))
    with torch.no_grad(), capture_attention(module) as cap:
        module(torch.randn(1, 4 * per_group, HIDDEN), specs, patterns, freqs=rope(positions * 40))
    return cap.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k tokens per group instead of 8k")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    per_group = 2048 if args.quick else 8192
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as folder:
        path = record(Path(folder) / "layer.capture.safetensors", per_group)
        size = path.stat().st_size
        opened = []
        open_seconds = min(peak_growth(lambda: opened.append(load_capture(path)))[0] for _ in range(args.repeats))
        capture = opened[-1]
    layer = capture_layers(capture)[0]
    start = time.perf_counter()
    run = layer_run(layer)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    verification = verify_layer(layer, run, capture.activations_dtype)
    verify_seconds = time.perf_counter() - start
    assert layer.scenario is not None
    generated = ExplorerRun(scenario_to_dict(layer.scenario))
    captured_times, generated_times, captured_peaks, generated_peaks = [], [], [], []
    for _ in range(args.repeats):  # interleaved, fresh memoisation each time
        run._cache.clear()
        generated._cache.clear()
        seconds, peak = peak_growth(run.weights)
        captured_times.append(seconds)
        captured_peaks.append(peak)
        seconds, peak = peak_growth(generated.weights)
        generated_times.append(seconds)
        generated_peaks.append(peak)
    tokens = 4 * per_group
    print(f"layer: {tokens:,} tokens (4 groups of {per_group:,}), hidden {HIDDEN}, {HEADS} heads, RoPE")
    print(f"capture file: {size / 2**20:.1f} MB; open + check: {open_seconds:.3f} s")
    print(
        f"prepare the run: {setup:.3f} s; verify (forward vs recorded): {verify_seconds:.3f} s, "
        f"max |diff| {verification.max_abs_diff:.2e} (tolerance {verification.tolerance_text})"
    )
    print(
        f"weight maps + statistics, recorded layer: {min(captured_times):.3f} s; generated inputs: "
        f"{min(generated_times):.3f} s; ratio {min(captured_times) / min(generated_times):.2f}x"
    )
    print(
        f"peak RSS growth of the weight pass, recorded: {min(captured_peaks) / 2**20:.0f} MB; generated: "
        f"{min(generated_peaks) / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    main()
