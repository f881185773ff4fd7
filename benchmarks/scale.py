"""Interactive at AB-UPT scale: preview, exact pass vs forward, window, memory, redraw, app path vs CLI path.

Usage: python -m benchmarks.scale [--quick] [--repeats N] [--json OUT]

Everything is measured in this one process and reported as ratios next to the absolute times (a shared machine's
absolute times vary run to run; ratios measured side by side hold better). Sizes: the shipped AB-UPT-sized example
(98,304 tokens, point cloud, RoPE) and the same layer at a quarter of the size (24,576 tokens).
"""

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.measure import peak_extra_rss, timed, write_json
from noether.explorer.io import load_scenario_file
from noether.explorer.resources import examples_dir
from noether.explorer.run import ExplorerRun
from noether.explorer.views import display_map
from noether.explorer.weights import WeightOptions, attention_weight_maps, group_keys
from noether.explorer.window import Window
from noether.explorer.worker import JobKeeper

POLL_S = 0.5
"""How often the app's fragment reads the job's progress (it polls once a second; twice is the harsher case)."""


def abupt(scale: int = 1) -> dict[str, Any]:
    """The shipped AB-UPT-sized scenario with every group divided by ``scale``."""
    report = load_scenario_file(str(examples_dir() / "abupt_sized.yaml"))
    assert report.scenario is not None
    data = report.scenario.model_dump(mode="json", exclude_none=True)
    data["token_specs"] = [{spec["name"]: spec["size"] // scale} for spec in data["token_specs"]]
    data["run"]["device"] = "cpu"
    return data


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a square matmul on this machine now (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _forward(run: ExplorerRun) -> None:
    with torch.no_grad():
        run._call(run.x_queries, list(run.scenario.token_specs), run.freqs_queries)


def _exact(run: ExplorerRun, progress: Callable[[float, str], None] | None = None) -> object:
    """The whole exact pass with every statistic, keys included (nothing memoised between repeats)."""
    with torch.no_grad():
        keys = group_keys(run.core, run.layout, run.x_keys, run.inputs.freqs, run.kv_cache())
    rows, cols = run.grids(1024)
    x, freqs = run._query_inputs()
    return attention_weight_maps(run.core, run.layout, x, freqs, keys, rows, cols, WeightOptions(), progress)


def _app_path(run: ExplorerRun) -> object:
    """The app's code path: the pass in a worker thread, progress read by another thread every POLL_S."""
    keeper = JobKeeper()
    job = keeper.submit(object(), lambda report, cancel: run.weights(1024, progress=report, cancel=cancel))
    seen = []
    while not job.wait(POLL_S):
        seen.append(job.fraction)
    assert job.state == "done", job.error
    run._cache.pop(("weights", 1024, WeightOptions(chunk_bytes=run._chunk_bytes())))
    return job.result


def _cli_path(run: ExplorerRun) -> object:
    """The CLI's code path: the same call in the calling thread, progress printed at most every tenth."""
    last = [-1]

    def report(fraction: float, message: str) -> None:
        if int(fraction * 10) != last[0]:
            last[0] = int(fraction * 10)

    result = run.weights(1024, progress=report)
    run._cache.pop(("weights", 1024, WeightOptions(chunk_bytes=run._chunk_bytes())))
    return result


def exact_vs_forward(scale: int, repeats: int, peak: float) -> dict[str, Any]:
    run = ExplorerRun(abupt(scale))
    pairs = run.cost().attended_pairs * run.scenario.run.batch_size
    hidden = run.scenario.attention.hidden_dim
    best = {"forward": float("inf"), "exact": float("inf")}
    _forward(run)
    for _ in range(repeats):  # interleaved, so that both see the same machine
        best["forward"] = min(best["forward"], timed(lambda: _forward(run)))
        best["exact"] = min(best["exact"], timed(lambda: _exact(run)))
    forward_flops = 4 * pairs * hidden  # QK^T and PV over the attended pairs
    exact_flops = 2 * pairs * hidden  # QK^T only
    return {
        "tokens": run.layout.n_queries,
        "attended_pairs": pairs,
        "forward_s": best["forward"],
        "exact_s": best["exact"],
        "ratio": best["exact"] / best["forward"],
        "forward_gflops": forward_flops / best["forward"] / 1e9,
        "exact_gflops": exact_flops / best["exact"] / 1e9,
        "forward_peak_share": forward_flops / best["forward"] / 1e9 / peak,
        "exact_peak_share": exact_flops / best["exact"] / 1e9 / peak,
        "run": run,
    }


def interactive(run: ExplorerRun) -> dict[str, float]:
    """Preview, window, memory of the exact pass and redraws, on an already prepared run."""
    start = time.perf_counter()
    fresh = ExplorerRun(abupt(1))
    fresh.preview()
    from_scenario = time.perf_counter() - start
    run._cache.pop("keys", None)
    preview = timed(run.preview)
    window = timed(lambda: run.window(Window(16000, 17024, 15000, 16024)))
    extra, result = peak_extra_rss(lambda: run.weights(1024))
    redraws = []
    for head in (0, 1, "mean"):
        for pooling in ("mean", "max"):
            redraws.append(timed(lambda h=head, p=pooling: display_map(result, 400, head=h, pooling=p)))  # type: ignore[arg-type,misc]
    return {
        "preview_s": preview,
        "preview_from_scenario_s": from_scenario,
        "window_1024_s": window,
        "exact_extra_peak_mb": extra / 2**20,
        "redraw_max_ms": max(redraws) * 1000,
    }


def app_vs_cli(scale: int, repeats: int) -> dict[str, float]:
    run = ExplorerRun(abupt(scale))
    run.keys()
    best = {"app": float("inf"), "cli": float("inf")}
    threads = {}

    def probe() -> None:
        threads["worker"] = torch.get_num_threads()

    worker = threading.Thread(target=probe)
    worker.start()
    worker.join()
    for _ in range(repeats):
        best["cli"] = min(best["cli"], timed(lambda: _cli_path(run)))
        best["app"] = min(best["app"], timed(lambda: _app_path(run)))
    return {
        "tokens": run.layout.n_queries,
        "cli_s": best["cli"],
        "app_s": best["app"],
        "ratio": best["app"] / best["cli"],
        "threads_main": torch.get_num_threads(),
        "threads_worker": threads["worker"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1/16 and 1/4 of the sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best is kept; default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's choice). On a machine shared with other jobs, 1 avoids "
        "measuring how long each parallel op waits for a descheduled sibling thread",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    small, large = (16, 4) if args.quick else (4, 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    peak = matmul_peak()
    results: dict[str, Any] = {"matmul_peak_gflops": peak}
    for label, scale in (("small", small), ("large", large)):
        print(f"exact pass vs forward at 1/{scale} ...", file=sys.stderr)
        results[label] = exact_vs_forward(scale, args.repeats, peak)
    print("preview, window, memory, redraw ...", file=sys.stderr)
    results["interactive"] = interactive(results["large"].pop("run"))
    results["small"].pop("run")
    print("app path vs CLI path ...", file=sys.stderr)
    results["app_vs_cli"] = app_vs_cli(small, args.repeats)
    results["matmul_peak_after_gflops"] = matmul_peak()

    print(f"\nfp32 matmul peak (2048^2): {peak:.1f} GFLOP/s before, {results['matmul_peak_after_gflops']:.1f} after")
    for label in ("small", "large"):
        r = results[label]
        print(
            f"{r['tokens']:>7,} tokens: forward {r['forward_s']:7.2f} s ({r['forward_gflops']:5.1f} GFLOP/s, "
            f"{r['forward_peak_share']:4.0%} of peak) | exact pass {r['exact_s']:7.2f} s ({r['exact_gflops']:5.1f} "
            f"GFLOP/s of QK^T, {r['exact_peak_share']:4.0%} of peak) | exact/forward {r['ratio']:.2f}x"
        )
    i = results["interactive"]
    print(
        f"{results['large']['tokens']:,} tokens: preview {i['preview_s']:.2f} s on the prepared layer "
        f"({i['preview_from_scenario_s']:.2f} s from the scenario, module and inputs included); "
        f"1024x1024 window {i['window_1024_s']:.2f} s; exact pass extra peak RSS {i['exact_extra_peak_mb']:.0f} MB; "
        f"redraw another head/pooling from kept maps <= {i['redraw_max_ms']:.1f} ms"
    )
    a = results["app_vs_cli"]
    print(
        f"{a['tokens']:,} tokens: app path (worker thread, polled every {POLL_S} s) {a['app_s']:.2f} s vs CLI path "
        f"{a['cli_s']:.2f} s: {a['ratio']:.2f}x (torch threads: {a['threads_main']} main, {a['threads_worker']} worker)"
    )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
