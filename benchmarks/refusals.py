"""Time how fast hostile or oversized input is refused, as ratios to loading an ordinary example, in one run.

Usage: python -m benchmarks.refusals [--repeats N]

The test suite bounds the work of these refusals (bytes read, nodes composed, values built, tensor bytes), which
cannot fail by chance; the seconds they take on this machine are measured here instead.
"""

import argparse
import sys
from collections.abc import Callable

from benchmarks.measure import best_of
from noether.explorer.io import MAX_SCENARIO_BYTES, load_scenario_bytes, load_scenario_file
from noether.explorer.presets import preset_path
from noether.explorer.problems import ExplorerError
from noether.explorer.run import ExplorerRun


def maximal_alias_bomb() -> bytes:
    """As many aliases as fit under the size limit, each referring to the previous level twice."""
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 10_000)]
    return "\n".join(lines).encode()


def billion_tokens() -> None:
    document = {
        "attention": {"hidden_dim": 1024, "num_heads": 8},
        "token_specs": [{"surface": 6 * 10**8}, {"volume": 4 * 10**8}],
        "attention_patterns": [{"query_tokens": ["surface", "volume"], "key_value_tokens": ["surface", "volume"]}],
    }
    try:
        ExplorerRun(document)
    except ExplorerError:
        return
    raise AssertionError("a billion-token scenario was not refused")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the best is kept (default 3)")
    args = parser.parse_args(argv)

    example = preset_path("self_anchor")
    bomb = maximal_alias_bomb()
    depth = MAX_SCENARIO_BYTES // 2 - 8
    deep = ("[" * depth + "]" * depth).encode()
    cases: dict[str, Callable[[], object]] = {
        "load the self_anchor example (baseline)": lambda: load_scenario_file(example),
        f"refuse the maximal alias bomb ({len(bomb):,} bytes)": lambda: load_scenario_bytes(bomb, name="bomb.yaml"),
        "refuse a maximally deep YAML document": lambda: load_scenario_bytes(deep, fmt="yaml"),
        "refuse a maximally deep JSON document": lambda: load_scenario_bytes(deep, fmt="json"),
        "refuse an endless file (/dev/zero)": lambda: load_scenario_file("/dev/zero"),
        "refuse a billion-token ExplorerRun": billion_tokens,
    }
    print(f"best of {args.repeats} runs, ratio to the baseline", file=sys.stderr)
    baseline = None
    for name, action in cases.items():
        seconds = best_of(action, args.repeats, warm_up=False)
        baseline = baseline or seconds
        print(f"  {name:<52} {seconds * 1000:9.1f} ms   {seconds / baseline:7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
