"""The Mask view of a scenario with many groups: time to build its figures and the size of what goes to the browser.

Usage: python -m benchmarks.many_groups [--groups 100 200 1000]

Prints, per group count, the seconds to validate the scenario, compute the view and build both figures, and the
bytes of the figures' JSON (what Streamlit sends). Bounds for 1,000 groups: 2 s and 2 MB.
"""

import argparse
import time
from typing import Any

from noether.explorer.figures import group_mask_figure, mask_figure
from noether.explorer.scenario import validate_scenario
from noether.explorer.views import mask_view

DISPLAY_BINS = 1024
TIME_BOUND_S, PAYLOAD_BOUND_BYTES = 2.0, 2 * 2**20


def many_groups(count: int, tokens: int = 96) -> dict[str, Any]:
    """``count`` groups; each attends to itself and to the first group (a sparse, realistic block structure)."""
    names = [f"g{index:04d}" for index in range(count)]
    return {
        "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2},
        "token_specs": [{name: tokens} for name in names],
        "attention_patterns": [
            {"query_tokens": [name], "key_value_tokens": list(dict.fromkeys([names[0], name]))} for name in names
        ],
        "run": {"device": "cpu", "inputs": "random"},
    }


def measure(count: int) -> tuple[float, int]:
    start = time.perf_counter()
    report = validate_scenario(many_groups(count))
    assert report.scenario is not None, report.problems[:3]
    view = mask_view(report.scenario, DISPLAY_BINS)
    figures = (group_mask_figure(view.groups), mask_figure(view.layout, view.pooled, view.rows, view.cols))
    payload = sum(len(figure.to_json()) for figure in figures)
    return time.perf_counter() - start, payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[100, 200, 1000])
    args = parser.parse_args()
    for count in args.groups:
        seconds, payload = measure(count)
        verdict = ""
        if count == 1000:
            ok = seconds <= TIME_BOUND_S and payload <= PAYLOAD_BOUND_BYTES
            verdict = f"  {'within' if ok else 'OUTSIDE'} the bounds ({TIME_BOUND_S:g} s, {PAYLOAD_BOUND_BYTES:,} B)"
        print(
            f"{count:>5} groups: mask view built in {seconds:6.2f} s "
            f"({seconds / TIME_BOUND_S:.2f}x the bound), payload {payload:,} B{verdict}"
        )


if __name__ == "__main__":
    main()
