"""The benchmarks' command-line options (the benchmarks themselves run outside the suite)."""

import pytest
import torch

from benchmarks import run


def test_run_takes_a_thread_count_like_the_other_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    assert run.parse_args(["--quick", "--threads", "1"]).threads == 1 and chosen == [1]
    assert run.parse_args(["--quick"]).threads is None and chosen == [1]  # torch's choice is left alone


def test_run_refuses_a_thread_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(["--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads must be at least 1 (got 0)" in capsys.readouterr().err
