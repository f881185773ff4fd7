"""What recording a model's attention calls costs, measured against the same forward pass in one run.

Usage: python -m benchmarks.capture_overhead [--quick] [--blocks N] [--repeats N]

Model: a stack of pre-norm blocks, each a two-branch self-anchor attention (RoPE on) plus an MLP, hidden 192, 3 heads,
surface and volume anchors and queries. Reported (best of the repeats, interleaved, same process):
- forward without capture; forward inside ``capture_attention`` (float32 and float16 activations);
- the copies alone: copying tensors of the recorded shapes and dtypes once, which any recording must do;
- hooks alone: capture with a byte budget so small that nothing is copied;
- the time spent inside the capture's hooks (copies included), measured in the same forward: robust to load;
- the ratio capture / (forward + copies), the target being at most 1.3;
- file size, the size estimate and the time to write the file.
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.measure import timed
from noether.core.schemas.modules.attention import TokenSpec
from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.explorer.capture import Capture, capture_attention
from noether.modeling.modules.attention import SelfAnchorAttention, SelfAnchorAttentionConfig
from noether.modeling.modules.layers import RopeFrequency

HIDDEN, HEADS = 192, 3
DTYPES = {"float32": None, "float16": torch.float16}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = SelfAnchorAttentionConfig(
            hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True, branches=["surface", "volume"]
        )
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.attention = SelfAnchorAttention(config)
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, 4 * HIDDEN), nn.GELU(), nn.Linear(4 * HIDDEN, HIDDEN))

    def forward(self, x: torch.Tensor, specs: list[TokenSpec], freqs: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), specs, freqs=freqs)[0]
        return x + self.mlp(self.norm2(x))


class Model(nn.Module):
    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.rope = RopeFrequency(
            RopeFrequencyConfig(hidden_dim=HIDDEN // HEADS, input_dim=3, implementation="complex")
        )
        self.blocks = nn.ModuleList([Block() for _ in range(blocks)])

    def forward(self, x: torch.Tensor, positions: torch.Tensor, specs: list[TokenSpec]) -> torch.Tensor:
        freqs = self.rope(positions)
        for block in self.blocks:
            x = block(x, specs, freqs)
        return x


class TimedCapture(Capture):
    """A Capture that adds up the time spent inside its hooks (copies included)."""

    hook_seconds = 0.0

    def _before_call(self, *args: Any) -> None:
        start = time.perf_counter()
        super()._before_call(*args)
        self.hook_seconds += time.perf_counter() - start

    def _after_call(self, *args: Any) -> None:
        start = time.perf_counter()
        super()._after_call(*args)
        self.hook_seconds += time.perf_counter() - start


def copy_sources(cap: Capture) -> list[tuple[torch.Tensor, torch.dtype]]:
    """Tensors shaped like everything the capture stored, in the model's dtype, with the dtype they are stored in."""
    return [
        (torch.randn(t.shape).to(torch.float32 if t.is_floating_point() else t.dtype), t.dtype)
        for t in cap._tensors.values()
        if isinstance(t, torch.Tensor)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    anchors, queries = (1024, 1024) if args.quick else (4096, 4096)
    sizes = {
        "surface_anchors": anchors,
        "surface_queries": queries,
        "volume_anchors": anchors,
        "volume_queries": queries,
    }
    specs = [TokenSpec(name=name, size=size) for name, size in sizes.items()]
    tokens = sum(sizes.values())
    torch.manual_seed(0)
    model = Model(args.blocks).eval()
    x, positions = torch.randn(1, tokens, HIDDEN), torch.rand(1, tokens, 3) * 10

    def plain() -> None:
        with torch.no_grad():
            model(x, positions, specs)

    def captured(dtype: torch.dtype | None = None, max_bytes: int = 2**40) -> Capture:
        with torch.no_grad(), capture_attention(model, activations_dtype=dtype, max_bytes=max_bytes) as cap:
            model(x, positions, specs)
        return cap

    def hook_time(dtype: torch.dtype | None) -> float:
        with torch.no_grad(), TimedCapture(model, activations_dtype=dtype) as cap:
            model(x, positions, specs)
        return cap.hook_seconds

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.blocks} blocks, {tokens:,} tokens, "
        f"hidden {HIDDEN}, {HEADS} heads",
        file=sys.stderr,
    )
    caps = {name: captured(dtype) for name, dtype in DTYPES.items()}
    sources = {name: copy_sources(cap) for name, cap in caps.items()}
    # Interleaved and best-of, so that load from other processes hits every variant alike.
    runs: dict[str, Callable[[], object]] = {"forward": plain, "hooks only": lambda: captured(max_bytes=1)}
    for name, dtype in DTYPES.items():
        runs[f"capture {name}"] = lambda dtype=dtype: captured(dtype)
        runs[f"copies {name}"] = lambda s=sources[name]: [t.to("cpu", d, copy=True) for t, d in s]
    best = {name: float("inf") for name in [*runs, *(f"in hooks {name}" for name in DTYPES)]}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], timed(fn))
        for name, dtype in DTYPES.items():
            best[f"in hooks {name}"] = min(best[f"in hooks {name}"], hook_time(dtype))
    forward = best["forward"]
    print(f"\nforward without capture                 {forward * 1000:8.1f} ms   1.00x")
    print(
        f"hooks only (nothing copied)             {best['hooks only'] * 1000:8.1f} ms   "
        f"{best['hooks only'] / forward:.2f}x"
    )
    for name, cap in caps.items():
        copies, with_capture = best[f"copies {name}"], best[f"capture {name}"]
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            path = cap.save(Path(folder) / "bench.capture.safetensors")
            save_seconds = time.perf_counter() - start
            size = path.stat().st_size
        print(f"\nactivations {name}: {len(cap.calls)} calls, {len(sources[name])} tensors")
        print(f"  copies alone                          {copies * 1000:8.1f} ms")
        print(f"  time inside the capture's hooks       {best[f'in hooks {name}'] * 1000:8.1f} ms")
        print(
            f"  forward with capture                  {with_capture * 1000:8.1f} ms   "
            f"{with_capture / forward:.2f}x forward"
        )
        print(f"  capture / (forward + copies)          {with_capture / (forward + copies):.2f}   (target <= 1.3)")
        print(
            f"  file {size / 2**20:.1f} MiB (estimate {cap.estimated_bytes / 2**20:.1f} MiB), "
            f"written in {save_seconds * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
