"""The device check's helpers on every available device (the CPU here), and its answer where CUDA is missing."""

from typing import Any

import pytest
import torch

from benchmarks import device_check

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_a_tiny_size_matches_the_cpu_and_is_reported(device: str) -> None:
    result = device_check.check_size(512, device, exact_reference=True, flex=False, repeats=1)
    assert result["tokens"] == 3 * 64
    assert result["forward_diff"] <= device_check.TOLERANCE
    assert set(result["exact_diffs"]) == set(result["preview_diffs"]) >= {"mean", "group_mass", "top_k_mass"}
    assert max(result["exact_diffs"].values()) <= device_check.TOLERANCE
    assert set(result["overview_diffs"]) == {"group_mass", "entropy", "top_k_mass"}
    assert max(result["overview_diffs"].values()) <= device_check.TOLERANCE
    assert [b["backend"] for b in result["backends"]] == ["per-pattern MixedAttention", "dense masked SDPA"]
    results = {"device_name": device, "torch": torch.__version__, "sizes": [result]}
    assert device_check.verdict(results) == []
    text = device_check.report(results)
    assert "192 tokens: forward" in text and "RESULT: all within 1e-4 of the CPU" in text


def test_a_mismatch_is_named() -> None:
    size: dict[str, Any] = {
        "tokens": 1000,
        "forward_diff": 0.0,
        "preview_diffs": {"mean": 0.0},
        "exact_diffs": {"entropy": 3e-3},
        "backends": [{"backend": "FlexAttention", "seconds": 1.0, "max_abs_diff_vs_mixed": 2e-3}],
    }
    failures = device_check.verdict({"sizes": [size]})
    assert failures == [
        "1,000 tokens: exact entropy differs from the CPU by 3.00e-03",
        "1,000 tokens: FlexAttention differs from MixedAttention by 2.00e-03",
    ]


def test_max_diff_of_missing_or_reshaped_tensors() -> None:
    assert device_check.max_diff(None, None) == 0.0
    assert device_check.max_diff(torch.zeros(2), None) == float("inf")
    assert device_check.max_diff(torch.zeros(2), torch.zeros(3)) == float("inf")
    assert device_check.max_diff(torch.zeros(2), torch.tensor([0.0, -0.5])) == 0.5


def test_without_cuda_it_says_so_and_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_check.main([]) == 0
    assert "CUDA is not available" in capsys.readouterr().out
