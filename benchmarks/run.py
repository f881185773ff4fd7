"""Measure the engine against the module's own forward pass and against dense attention, in one run.

Usage: python -m benchmarks.run [--quick] [--skip-flex] [--threads N] [--json OUT]

Reported as ratios measured in the same process (absolute times on shared machines are noisy):
- pooled head-averaged weight map vs MixedAttention forward, 24k-token two-branch self-anchor layer;
- attention backends (per-pattern MixedAttention, dense masked SDPA, FlexAttention) on the same layer;
- extra peak memory of the weight maps at ~100k tokens (RSS sampled while the pass runs);
- cost of a view change (another head / pooling) after the first computation.
"""

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks.measure import best_of, peak_extra_rss, write_json
from noether.explorer.run import ExplorerRun
from noether.explorer.views import display_map
from noether.explorer.weights import WeightOptions, attention_weight_maps, group_keys

MEAN_ONLY = WeightOptions(max_pooling=False, head_mean_max=False, row_stats=False)


def self_anchor(anchors: int, queries: int) -> dict[str, Any]:
    return {
        "attention": {"kind": "self_anchor", "hidden_dim": 192, "num_heads": 3, "branches": ["surface", "volume"]},
        "token_specs": [
            {"surface_anchors": anchors},
            {"surface_queries": queries},
            {"volume_anchors": anchors},
            {"volume_queries": queries},
        ],
        "run": {"device": "cpu", "inputs": "random"},
    }


def weights_vs_forward(anchors: int, queries: int, repeats: int) -> dict[str, float]:
    run = ExplorerRun(self_anchor(anchors, queries))
    with torch.no_grad():
        forward = best_of(lambda: run._call(run.x_queries, list(run.scenario.token_specs), None), repeats)
    mean_only = best_of(lambda: _maps(run, MEAN_ONLY), repeats)
    everything = best_of(lambda: _maps(run, WeightOptions()), repeats)
    return {
        "tokens": run.layout.n_queries,
        "forward_s": forward,
        "weights_mean_only_s": mean_only,
        "weights_all_s": everything,
        "ratio_mean_only": mean_only / forward,
        "ratio_all": everything / forward,
    }


def _maps(run: ExplorerRun, options: WeightOptions) -> object:
    """The whole weight computation, keys included (nothing memoised between repeats)."""
    with torch.no_grad():
        keys = group_keys(run.core, run.layout, run.x_keys, run.inputs.freqs, run.kv_cache())
    rows, cols = run.grids(1024)
    return attention_weight_maps(run.core, run.layout, run.x_queries, run.freqs_queries, keys, rows, cols, options)


def backends(anchors: int, queries: int, repeats: int, flex: bool) -> list[dict[str, Any]]:
    run = ExplorerRun(self_anchor(anchors, queries))
    include = ("mixed", "dense", "flex") if flex else ("mixed", "dense")
    timings = run.backends(repeats=repeats, include=include)
    reference = timings[0].seconds or 1.0
    return [
        {
            "backend": t.name,
            "seconds": t.seconds,
            "ratio_vs_mixed": (t.seconds / reference) if t.seconds else None,
            "max_abs_diff": t.max_abs_diff,
            "note": t.note,
        }
        for t in timings
    ]


def large_memory(anchors: int, queries: int) -> dict[str, float]:
    run = ExplorerRun(self_anchor(anchors, queries))
    run.keys()
    start = time.perf_counter()
    extra, result = peak_extra_rss(lambda: run.weights())
    weights_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for head in (0, 1, "mean"):
        for pooling in ("mean", "max"):
            display_map(result, 400, head=head, pooling=pooling)  # type: ignore[arg-type]
    view_change = (time.perf_counter() - start) / 6
    start = time.perf_counter()
    run.weights()
    memo = time.perf_counter() - start
    return {
        "tokens": run.layout.n_queries,
        "weights_s": weights_seconds,
        "extra_peak_mb": extra / 2**20,
        "estimate_mb": run.weights_estimate(1024, WeightOptions(chunk_bytes=run._chunk_bytes())).bytes / 2**20,
        "view_change_ms": view_change * 1000,
        "repeat_weights_call_ms": memo * 1000,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with ``--threads`` applied to torch (an error naming it when it is below 1)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--skip-flex", action="store_true", help="skip FlexAttention (its first compile takes ~20 s)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's choice). On a machine shared with other jobs, 1 avoids "
        "measuring how long each parallel op waits for a descheduled sibling thread",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1 (got {args.threads}); leave it out for torch's choice")
        torch.set_num_threads(args.threads)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    anchors, queries = (512, 1024) if args.quick else (4096, 8192)
    large = (1024, 2048) if args.quick else (16384, 32768)
    repeats = 2 if args.quick else 5
    results: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    print("weights vs forward ...", file=sys.stderr)
    results["weights_vs_forward"] = weights_vs_forward(anchors, queries, repeats)
    print("backends ...", file=sys.stderr)
    results["backends"] = backends(anchors, queries, repeats, flex=not args.skip_flex)
    print("large scenario memory ...", file=sys.stderr)
    results["large"] = large_memory(*large)

    w = results["weights_vs_forward"]
    print(f"\n{w['tokens']:,}-token two-branch self-anchor layer (hidden 192, 3 heads, batch 1, cpu)")
    print(f"  MixedAttention forward                 {w['forward_s'] * 1000:8.1f} ms   1.00x")
    print(
        f"  pooled head-mean weight map (mean)     {w['weights_mean_only_s'] * 1000:8.1f} ms   "
        f"{w['ratio_mean_only']:.2f}x"
    )
    print(
        f"  + max pooling, head-mean max, entropy, top-k  {w['weights_all_s'] * 1000:8.1f} ms   {w['ratio_all']:.2f}x"
    )
    print("\nattention backends on the same layer (attention only, median):")
    for b in results["backends"]:
        if b["seconds"] is None:
            print(f"  {b['backend']:<28} unavailable: {b['note']}")
        else:
            print(
                f"  {b['backend']:<28} {b['seconds'] * 1000:8.1f} ms   {b['ratio_vs_mixed']:.2f}x   "
                f"max|diff| {b['max_abs_diff']:.1e}   {b['note']}"
            )
    m = results["large"]
    print(
        f"\n{m['tokens']:,} tokens: weight maps with statistics in {m['weights_s']:.1f} s, "
        f"extra peak RSS {m['extra_peak_mb']:.0f} MB "
        f"(guard estimate {m['estimate_mb']:.0f} MB); view change {m['view_change_ms']:.1f} ms; "
        f"repeated weights() call {m['repeat_weights_call_ms']:.3f} ms"
    )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
