"""The model overview (and one rollout) against the forward passes of the layers they summarise, in one run.

Usage: python -m benchmarks.overview [--capture FILE] [--anchors N] [--queries N] [--repeats R]

Without ``--capture``: a synthetic AB-UPT-like stack (self, cross and joint anchor blocks over two domains, one
decoder per domain reading cached anchors; hidden 96, 4 heads, RoPE). With ``--capture``: every explorable call of
a capture file. Prints the seconds of the sum of the layers' forward passes, of the whole overview and of one
rollout, and their ratios (the target for the overview is at most 1.5x).
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.measure import timed, timed_both
from noether.explorer.model_overview import DEFAULT_TOP_K_ROWS, LayerSource, model_overview
from noether.explorer.rollout import attention_rollout
from noether.explorer.run import ExplorerRun


def _layer(kind: str, specs: dict[str, int | None], patterns: list[Any] | None, seed: int, **run: Any) -> dict:
    attention: dict[str, Any] = {"kind": kind, "hidden_dim": 96, "num_heads": 4, "use_rope": True}
    if kind != "mixed":
        attention["branches"] = ["surface", "volume"]
    doc: dict[str, Any] = {
        "attention": attention,
        "token_specs": [{name: size} for name, size in specs.items()],
        "run": {"device": "cpu", "inputs": "point_cloud", "seed": seed, **run},
    }
    if patterns is not None:
        doc["attention_patterns"] = [{"query_tokens": q, "key_value_tokens": k} for q, k in patterns]
    return doc


def synthetic_layers(anchors: int, queries: int) -> list[LayerSource]:
    """Five calls of an AB-UPT-like model: three physics blocks, one decoder per domain."""
    physics = {
        "surface_anchors": anchors,
        "surface_queries": queries,
        "volume_anchors": anchors,
        "volume_queries": queries,
    }
    layers = [
        LayerSource(f"physics_blocks.{i}.attention", kind, ExplorerRun(_layer(kind, physics, None, seed=i)))
        for i, kind in enumerate(["self_anchor", "cross_anchor", "joint_anchor"])
    ]
    for i, domain in enumerate(["surface", "volume"]):
        specs = {f"{domain}_anchors": None, f"{domain}_queries": queries}
        patterns = [([f"{domain}_anchors", f"{domain}_queries"], [f"{domain}_anchors"])]
        doc = _layer("mixed", specs, patterns, seed=10 + i, kv_cache_sizes={f"{domain}_anchors": anchors})
        layers.append(LayerSource(f"decoder_blocks.{domain}.0.attention", "decoder", ExplorerRun(doc)))
    return layers


def capture_layers(path: str) -> list[LayerSource]:
    """Every explorable call of a capture (needs the capture reader)."""
    from noether.explorer.capture_overview import load_capture_layers

    return load_capture_layers(path)


def forward_call(run: ExplorerRun) -> Callable[[], object]:
    """The module's own forward on the layer's inputs, as the engine runs it (the query pass when groups are cached)."""
    run.kv_cache()

    def call() -> object:
        run._cache.pop("forward", None)  # the engine keeps its forward; time a fresh one
        return run.forward()

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", help="a capture file instead of the synthetic stack")
    parser.add_argument("--anchors", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--top-k-rows", type=int, default=DEFAULT_TOP_K_ROWS, help="rows per query group behind the top-k mass"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = capture_layers(args.capture) if args.capture else synthetic_layers(args.anchors, args.queries)
    for layer in layers:
        layer.run.keys()  # inputs, caches and keys are part of opening a layer, not of the overview
    tokens = sum(layer.run.layout.n_keys for layer in layers)
    print(f"{len(layers)} calls, {tokens:,} key-axis tokens in all, torch threads {torch.get_num_threads()}")
    calls = [forward_call(layer.run) for layer in layers]
    group = layers[-1].run.layout.query_groups[-1].name
    rows = args.top_k_rows
    model_overview(layers, top_k_rows=rows)  # warm-up
    # Interleaved rounds: on a shared machine the load changes within seconds, so both sides of a ratio are
    # measured back to back and the best round of each is kept.
    forwards = [[0.0] * len(layers) for _ in range(args.repeats)]
    forward_cpu, overview_cpu = [], []
    overviews, bare, every_row, rollouts = [], [], [], []
    for round_ in range(args.repeats):
        cpu = 0.0
        for i, call in enumerate(calls):
            forwards[round_][i], seconds = timed_both(call)
            cpu += seconds
        forward_cpu.append(cpu)
        wall, cpu = timed_both(lambda: model_overview(layers, top_k_rows=rows))
        overviews.append(wall)
        overview_cpu.append(cpu)
        bare.append(timed(lambda: model_overview(layers, top_k=0)))
        every_row.append(timed(lambda: model_overview(layers, top_k_rows=None)))
        rollouts.append(timed(lambda: attention_rollout(layers, group, 0)))
    per_layer = [min(r[i] for r in forwards) for i in range(len(layers))]
    forward = min(sum(r) for r in forwards)
    overview, rollout = min(overviews), min(rollouts)
    for layer, seconds in zip(layers, per_layer, strict=True):
        print(f"  forward {layer.path:<40} {seconds * 1e3:8.1f} ms")
    print(f"sum of forward passes      {forward * 1e3:8.1f} ms")
    print(f"whole overview             {overview * 1e3:8.1f} ms   ratio {overview / forward:.2f}x (target <= 1.5x)")
    print(f"  (top-k mass from {rows} rows per query group; group masses and entropies from every row)")
    print(f"overview without top-k     {min(bare) * 1e3:8.1f} ms   ratio {min(bare) / forward:.2f}x")
    print(f"overview, top-k every row  {min(every_row) * 1e3:8.1f} ms   ratio {min(every_row) / forward:.2f}x")
    ratios = sorted(o / sum(f) for o, f in zip(overviews, forwards, strict=True))
    print(f"  per-round ratios         {', '.join(f'{r:.2f}' for r in ratios)}")
    if torch.get_num_threads() == 1:
        cpu_ratio = min(overview_cpu) / min(forward_cpu)
        both = f"{min(overview_cpu) * 1e3:8.1f} ms vs {min(forward_cpu) * 1e3:.1f} ms"
        print(f"  on CPU time (best)       {both}   ratio {cpu_ratio:.2f}x")
    print(f"rollout of {group}:0  {rollout * 1e3:8.1f} ms   ratio {rollout / forward:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
