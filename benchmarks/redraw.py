"""Re-drawing from kept maps and a warm app script run, optionally against another checkout, back to back.

Usage: python -m benchmarks.redraw [--rounds N] [--app-runs N] [--threads N] [--against CHECKOUT]

- redraw: ``display_map`` of every head choice (0, 1, mean) x pooling (mean, max) from the kept 1,024 x 1,024-bin
  maps of a two-branch self-anchor layer (3 heads), as ``benchmarks.run`` and ``benchmarks.scale`` time it; per
  round the mean and the slowest of the six, best round reported. The map size, not the token count, sets the cost:
  the layer here has 6,144 tokens so that the maps are cheap to compute, and the maps are as large as at 98,304.
- app: the app script on the default example, caches warm (Streamlit's AppTest): median of ``--app-runs`` reruns,
  wall time and the process's CPU time.

With ``--against CHECKOUT`` (another working tree of this project, e.g. ``git worktree add /tmp/old REV``) each
round runs once per tree in a child process, alternating, so that load drifts hit both alike; the ratios are
this tree over the other. This file imports nothing from ``benchmarks`` so that a child can run it on a tree that
lacks it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADS: tuple[int | str, ...] = (0, 1, "mean")
POOLINGS = ("mean", "max")


def _layer() -> dict[str, object]:
    return {
        "attention": {"kind": "self_anchor", "hidden_dim": 192, "num_heads": 3, "branches": ["surface", "volume"]},
        "token_specs": [
            {"surface_anchors": 1024},
            {"surface_queries": 2048},
            {"volume_anchors": 1024},
            {"volume_queries": 2048},
        ],
        "run": {"device": "cpu", "inputs": "random"},
    }


def measure_redraw(rounds: int) -> dict[str, object]:
    from noether.explorer.run import ExplorerRun
    from noether.explorer.views import display_map

    result = ExplorerRun(_layer()).weights(1024)
    assert result.mean.shape[-2:] == (1024, 1024), result.mean.shape
    means, slowest = [], []
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        times = []
        for head in HEADS:
            for pooling in POOLINGS:
                start = time.perf_counter()
                display_map(result, 400, head=head, pooling=pooling)  # type: ignore[arg-type]
                times.append(time.perf_counter() - start)
        means.append(sum(times) / len(times))
        slowest.append(max(times))
    return {
        "map_shape": list(result.mean.shape),
        "mean_of_6_ms": min(means[1:]) * 1000,
        "slowest_of_6_ms": min(slowest[1:]) * 1000,
    }


def measure_app(runs: int) -> dict[str, object]:
    from streamlit.testing.v1 import AppTest

    import noether

    app = Path(noether.__file__).resolve().parents[1] / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    at.run()  # caches warm
    assert not at.exception, [e.message for e in at.exception]
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        at.run()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    assert not at.exception, [e.message for e in at.exception]
    return {
        "app_median_ms": statistics.median(times) * 1000,
        "app_best_ms": min(times) * 1000,
        # CPU time of the whole process (the script runs in a thread of its own): other load moves it far less.
        "app_cpu_median_ms": statistics.median(cpu) * 1000,
    }


def child(rounds: int, app_runs: int) -> dict[str, object]:
    import noether

    out: dict[str, object] = {"tree": str(Path(noether.__file__).resolve().parents[1])}
    if rounds:
        out.update(measure_redraw(rounds))
    if app_runs:
        out.update(measure_app(app_runs))
    return out


def _in_child(tree: Path, args: argparse.Namespace) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads)]
    command += ["--rounds", str(args.rounds), "--app-runs", str(args.app_runs)]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="redraw rounds (six re-draws each); 0 skips")
    parser.add_argument("--app-runs", type=int, default=15, help="warm app reruns; 0 skips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately with this one")
    parser.add_argument("--repeats", type=int, default=3, help="alternations with --against")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.rounds, args.app_runs)))
        return 0
    print(f"load average {os.getloadavg()[0]:.2f} at start", file=sys.stderr)
    if args.against is None:
        results = [child(args.rounds, args.app_runs)]
    else:
        results = []
        for _ in range(args.repeats):
            results.append({"which": "other", **_in_child(args.against.resolve(), args)})
            results.append({"which": "this", **_in_child(ROOT, args)})
    for r in results:
        print(json.dumps(r))
    names = ("mean_of_6_ms", "slowest_of_6_ms", "app_median_ms", "app_best_ms", "app_cpu_median_ms")
    keys = [k for k in names if k in results[0]]
    for which in ("this", "other") if args.against is not None else (None,):
        picked = [r for r in results if r.get("which") == which]
        print(which or "this", " ".join(f"{k}={min(float(r[k]) for r in picked):.1f}" for k in keys))  # type: ignore[arg-type]
    if args.against is not None:
        for k in keys:
            best = {w: min(float(r[k]) for r in results if r["which"] == w) for w in ("this", "other")}  # type: ignore[arg-type]
            print(f"{k}: this / other = {best['this'] / best['other']:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at end", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
