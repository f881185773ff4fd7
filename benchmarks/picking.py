"""The rollout view's picker at growing group sizes: time to choose the drawn tokens, build the figure and serialise it,
and the bytes sent to the browser; plus mapping a click back to its token.

Usage: python -m benchmarks.picking [--tokens 1000 10000 100000 1000000] [--repeats 5]

Prints, per size, the best-of-``repeats`` seconds and payload bytes, and each as a ratio to the smallest size: the
drawn points are capped, so the ratios stay near 1 while the group grows a thousandfold.
"""

import argparse
import json

import numpy as np

from benchmarks.measure import best_of
from noether.explorer.figures import pick_figure
from noether.explorer.picking import PLANES, pick_layout, picked_token


def build(tokens: int, positions: np.ndarray, repeats: int) -> tuple[float, int]:
    """Seconds (best of a few) and payload bytes of one picker: an anchor group of 512 next to ``tokens`` points."""
    anchors = positions[:512]

    def picker() -> str:
        layout = pick_layout({"surface": tokens, "anchors": 512})
        return pick_figure(
            layout, [positions, anchors], PLANES["x – y (top)"], ("surface", tokens - 1), "Pick"
        ).to_json()

    payload = len(picker())
    return best_of(picker, repeats), payload


def main(sizes: list[int], repeats: int) -> None:
    sizes = sorted(sizes)
    rng = np.random.default_rng(0)
    rows = []
    for tokens in sizes:
        positions = rng.normal(size=(tokens, 3)).astype(np.float32)
        seconds, payload = build(tokens, positions, repeats)
        rows.append((tokens, seconds, payload))
    base_s, base_bytes = rows[0][1], rows[0][2]
    print(f"{'tokens':>10} {'seconds':>9} {'x smallest':>10} {'bytes':>9} {'x smallest':>10}")
    for tokens, seconds, payload in rows:
        print(f"{tokens:>10,} {seconds:>9.4f} {seconds / base_s:>10.2f} {payload:>9,} {payload / base_bytes:>10.2f}")
    layout = pick_layout({"surface": sizes[-1], "anchors": 512})
    state = json.loads(json.dumps({"selection": {"points": [{"curve_number": 0, "point_index": 17}], "box": []}}))
    print(f"click -> token at {sizes[-1]:,} tokens: {best_of(lambda: picked_token(state, layout), 100) * 1e6:.1f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.tokens, args.repeats)
