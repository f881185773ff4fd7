"""One short run on a CUDA machine: is the cuda path right, and how fast is it?

Usage: python -m benchmarks.device_check [--device cuda] [--quick] [--skip-flex] [--json OUT]

Checks, in float32 against the CPU (same module weights and inputs: both are made on the CPU and moved):
- every attention backend (per-pattern MixedAttention, dense masked SDPA, FlexAttention) gives the CPU forward's
  output (<= 1e-4), at 24k tokens (the dense one only where the resource guard allows it);
- the exact weight pass (pooled maps, group mass, entropy, top-k mass, received attention) and the model overview's
  statistics (group mass, entropy, top-k mass of every row; the fused kernel is CPU-only, so the device computes
  them from chunked scores) at 24k tokens, and the preview at 98k tokens, give the CPU's results (<= 1e-4);
and prints forward, preview and exact-pass times at 24k and 98k tokens and the backends' time ratios.
Designed to finish well within five minutes on one GPU. Without CUDA it says so and exits 0.
"""

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.measure import write_json
from benchmarks.scale import abupt
from noether.explorer.layer_stats import LayerStatistics, layer_statistics
from noether.explorer.run import ExplorerRun
from noether.explorer.weights import WeightResult

TOLERANCE = 1e-4
_COMPARED = ("mean", "max", "head_mean_max", "group_mass", "received", "entropy", "top_k_mass")


def scenario(scale: int, device: str) -> dict[str, Any]:
    """The AB-UPT-sized example divided by ``scale``, in float32 on ``device``."""
    data = abupt(scale)
    data["run"] = {**data["run"], "device": device, "dtype": "float32"}
    return data


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return time.perf_counter() - start, value


def max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """Largest absolute difference (0 for two missing tensors; inf when only one is missing or shapes differ)."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    if a.shape != b.shape:
        return float("inf")
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max()) if a.numel() else 0.0


def result_diffs(result: WeightResult, reference: WeightResult) -> dict[str, float]:
    """Per-field largest difference of two weight results (maps, group masses, statistics).

    Received attention is a sum over up to all query rows (values in the hundreds at 100k tokens), so its
    difference is relative to its largest value; everything else is a probability or nats, compared as is.
    """
    diffs = {name: max_diff(getattr(result, name), getattr(reference, name)) for name in _COMPARED}
    diffs["received"] /= max(1.0, float(reference.received.abs().max()) if reference.received.numel() else 1.0)
    return diffs


def overview_diffs(stats: LayerStatistics, reference: LayerStatistics) -> dict[str, float]:
    """Largest differences of the overview's statistics of one layer (every row, so nothing is sampled)."""
    return {
        name: float(np.abs(getattr(stats, name) - getattr(reference, name)).max())
        for name in ("group_mass", "entropy", "top_k_mass")
    }


def forward_output(run: ExplorerRun) -> tuple[float, torch.Tensor]:
    run._cache.pop("forward", None)
    seconds, result = timed(run.forward, run.device)
    return seconds, result.output


def check_size(scale: int, device: str, *, exact_reference: bool, flex: bool, repeats: int = 3) -> dict[str, Any]:
    """Everything compared and timed at one size; ``exact_reference`` also runs the CPU's exact pass."""
    run, cpu = ExplorerRun(scenario(scale, device)), ExplorerRun(scenario(scale, "cpu"))
    out: dict[str, Any] = {"tokens": run.layout.n_queries, "device": str(run.device)}
    forward_output(run)  # warm-up: kernels, allocator
    out["forward_s"], output = forward_output(run)
    _, reference = forward_output(cpu)
    out["forward_diff"] = max_diff(output, reference)
    out["preview_s"], preview = timed(run.preview, run.device)
    out["preview_diffs"] = result_diffs(preview, cpu.preview())
    out["exact_s"], exact = timed(run.weights, run.device)
    if exact_reference:
        out["exact_diffs"] = result_diffs(exact, cpu.weights())
        out["overview_s"], stats = timed(lambda: layer_statistics(run, top_k_rows=None), run.device)
        out["overview_diffs"] = overview_diffs(stats, layer_statistics(cpu, top_k_rows=None))
        include = ("mixed", "dense", "flex") if flex else ("mixed", "dense")
        timings = run.backends(repeats=repeats, include=include)
        base = timings[0].seconds or float("nan")
        out["backends"] = [
            {
                "backend": t.name,
                "seconds": t.seconds,
                "ratio_vs_mixed": None if t.seconds is None else t.seconds / base,
                "max_abs_diff_vs_mixed": t.max_abs_diff,
                "note": t.note,
            }
            for t in timings
        ]
    return out


def verdict(results: dict[str, Any], tolerance: float = TOLERANCE) -> list[str]:
    """Every comparison above ``tolerance``, as lines naming the size, the quantity and the difference."""
    failures = []
    for size in results["sizes"]:
        label = f"{size['tokens']:,} tokens"
        if size["forward_diff"] > tolerance:
            failures.append(f"{label}: forward output differs from the CPU by {size['forward_diff']:.2e}")
        for kind in ("preview_diffs", "exact_diffs", "overview_diffs"):
            for name, diff in size.get(kind, {}).items():
                if diff > tolerance:
                    failures.append(f"{label}: {kind.split('_')[0]} {name} differs from the CPU by {diff:.2e}")
        for backend in size.get("backends", []):
            diff = backend["max_abs_diff_vs_mixed"]
            if backend["seconds"] is not None and diff is not None and diff > tolerance:
                failures.append(f"{label}: {backend['backend']} differs from MixedAttention by {diff:.2e}")
    return failures


def report(results: dict[str, Any]) -> str:
    lines = [f"device: {results['device_name']} (torch {results['torch']})"]
    for size in results["sizes"]:
        lines.append(
            f"{size['tokens']:>7,} tokens: forward {size['forward_s'] * 1000:8.1f} ms | preview "
            f"{size['preview_s'] * 1000:8.1f} ms | exact pass {size['exact_s'] * 1000:8.1f} ms "
            f"({size['exact_s'] / size['forward_s']:.2f}x the forward) | forward vs CPU {size['forward_diff']:.1e}"
        )
        for name in ("preview_diffs", "exact_diffs", "overview_diffs"):
            if name in size:
                worst = max(size[name].values())
                lines.append(f"          {name.split('_')[0]} vs CPU: largest difference {worst:.1e}")
        for backend in size.get("backends", []):
            if backend["seconds"] is None:
                lines.append(f"          {backend['backend']:<28} unavailable: {backend['note']}")
            else:
                lines.append(
                    f"          {backend['backend']:<28} {backend['seconds'] * 1000:8.2f} ms "
                    f"{backend['ratio_vs_mixed']:5.2f}x  max|diff| {backend['max_abs_diff_vs_mixed']:.1e}  "
                    f"{backend['note']}"
                )
    failures = verdict(results)
    lines.append("RESULT: " + ("all within 1e-4 of the CPU" if not failures else "MISMATCH"))
    lines += [f"  {failure}" for failure in failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="device to check against the CPU (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="1/16 and 1/4 of the sizes")
    parser.add_argument("--skip-flex", action="store_true", help="skip FlexAttention (its first compile is slow)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"CUDA is not available (torch {torch.__version__}): nothing to check on this machine.")
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    small, large = (16, 4) if args.quick else (4, 1)
    results: dict[str, Any] = {"device_name": name, "torch": torch.__version__, "sizes": []}
    print(f"checking {name} against the CPU ...", file=sys.stderr)
    results["sizes"].append(check_size(small, args.device, exact_reference=True, flex=not args.skip_flex))
    results["sizes"].append(check_size(large, args.device, exact_reference=False, flex=False))
    print(report(results))
    write_json(args.json, results)
    return 1 if verdict(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
