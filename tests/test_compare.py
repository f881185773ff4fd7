"""Comparing two scenarios: the token-level mask difference and the side-by-side cost table."""

import pytest

from noether.explorer import compare
from noether.explorer.layout import TokenLayout
from noether.explorer.presets import load_preset
from noether.explorer.scenario import Scenario, validate_scenario


def small_mixed(b_reads: list[str], dtype: str = "float32") -> Scenario:
    """Two groups: a reads itself, b reads ``b_reads``."""
    report = validate_scenario(
        {
            "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2},
            "token_specs": [{"name": "a", "size": 8}, {"name": "b", "size": 12}],
            "attention_patterns": [
                {"query_tokens": ["a"], "key_value_tokens": ["a"]},
                {"query_tokens": ["b"], "key_value_tokens": b_reads},
            ],
            "run": {"dtype": dtype},
        }
    )
    assert report.scenario is not None, report.problems
    return report.scenario


def test_mask_difference_on_equal_axes():
    la = TokenLayout.from_scenario(small_mixed(["a", "b"]))
    lb = TokenLayout.from_scenario(small_mixed(["b"]))
    same = compare.mask_difference(la, la, 400)
    assert same.values is not None and not same.values.any() and "identical" in same.message
    diff = compare.mask_difference(lb, la, 400)
    assert diff.rows is not None and diff.rows.exact
    # b's rows gain the keys of a in the other scenario; nothing else changes.
    assert diff.values is not None and diff.values[8:, :8].min() == 1 and diff.values[:8].max() == 0
    assert diff.values[8:, 8:].max() == 0 and "96 of 400 cells differ" in diff.message
    pooled = compare.mask_difference(lb, la, 3)  # 7 tokens per cell: cells straddling the a|b boundary are fractions
    assert pooled.values is not None and pooled.values.shape == (3, 3)
    assert pooled.values[1, 0] == pytest.approx(6 / 7) and pooled.values[2, 0] == 1


def test_mask_difference_needs_equal_axes():
    result = compare.mask_difference(
        TokenLayout.from_scenario(load_preset("perceiver")), TokenLayout.from_scenario(load_preset("block_causal")), 64
    )
    assert result.values is None and result.rows is None and "token axes differ" in result.message


def test_scenario_cost_counts_bytes_in_the_scenarios_dtype():
    full, half = (
        compare.scenario_cost(small_mixed(["a", "b"])),
        compare.scenario_cost(small_mixed(["a", "b"], "bfloat16")),
    )
    assert full.attended_pairs == half.attended_pairs == 8 * 8 + 12 * 20
    assert full.per_pattern_bytes == 2 * half.per_pattern_bytes > 0


def test_cost_difference_table():
    perceiver = compare.scenario_cost(load_preset("perceiver"))
    table = compare.cost_difference(perceiver, perceiver)
    assert {row["other / current"] for row in table} <= {"same", "+0.00 points"}
    assert [row["quantity"] for row in table][3] == "sparsity"
    full = compare.scenario_cost(load_preset("full_self_attention"))
    other = compare.cost_difference(full, compare.scenario_cost(load_preset("block_causal")))
    pairs = next(row for row in other if row["quantity"].startswith("attended pairs"))
    assert pairs["current"] == "4,194,304" and pairs["other"] == "1,376,256" and pairs["other / current"] == "0.33x"
