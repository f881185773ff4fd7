"""Overview and rollout on captures: layer sources with plain-words kinds, the rollout command, the demo model's
rollout through its perceiver and geometry block, and the Model overview / Rollout views in the app."""

from pathlib import Path

import numpy as np
import pytest
from app_helpers import model_mode

from noether.explorer.capture_file import load_capture
from noether.explorer.capture_overview import capture_positions, capture_sources
from noether.explorer.capture_views import demo_capture_path
from noether.explorer.cli import main as cli_main
from noether.explorer.model_overview import model_overview
from noether.explorer.rollout import attention_rollout, pass_numbers

TINY = Path(__file__).parent / "corpus" / "good" / "tiny.capture.safetensors"


def test_tiny_capture_becomes_verified_sources_with_kinds() -> None:
    sources, notes = capture_sources(load_capture(TINY))
    assert notes == []
    assert [(s.path, s.kind) for s in sources] == [("encoder#0", "dot product"), ("block#0", "self anchor")]
    assert all(s.max_abs_diff is not None and s.max_abs_diff <= 1e-5 for s in sources)
    overview = model_overview(sources)
    assert [c.max_abs_diff for c in overview.calls] == [s.max_abs_diff for s in sources]
    table = overview.mass_table()
    assert table.columns == [
        "tokens → tokens",
        "surface_anchors → surface_anchors",
        "surface_queries → surface_anchors",
    ]
    np.testing.assert_allclose(table.values[0, 0], 1.0, atol=1e-5)


def test_rollout_command_writes_png_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, page = tmp_path / "r.png", tmp_path / "r.html"
    assert cli_main(["rollout", str(TINY), "--token", "surface_queries:1", "--out", str(png), "-q"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "rollout of surface_queries:1 from block#0" in out and "total weight 1.000000" in out
    assert cli_main(["rollout", str(TINY), "--token", "surface_anchors:0", "--out", str(page), "-q"]) == 0
    assert "plotly" in page.read_text()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("surface_queries", "is not GROUP:INDEX"),
        ("wing:0", "no call outputs a group named 'wing'"),
        ("surface_queries:7", "index 7 is outside 'surface_queries'"),
    ],
)
def test_rollout_command_refuses_a_bad_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str, expected: str
) -> None:
    out = tmp_path / "r.png"
    assert cli_main(["rollout", str(TINY), "--token", token, "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


def test_rollout_command_refuses_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a capture")
    assert cli_main(["rollout", str(bad), "--token", "a:0", "--out", str(tmp_path / "r.png"), "-q"]) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.skipif(demo_capture_path() is None, reason="no demo capture in this checkout")
def test_demo_rollout_reaches_the_geometry_through_the_perceiver() -> None:
    capture = load_capture(demo_capture_path())  # type: ignore[arg-type]
    sources, _ = capture_sources(capture, verify=False)
    # The anchor pass, then the inference pass that reads every block's cache.
    passes = pass_numbers(sources)
    assert passes[0] == 0 and passes[-1] == 1 and passes == sorted(passes)
    positions = capture_positions(capture)
    result = attention_rollout(sources, "surface_queries", 10, positions=positions)
    assert result.total == pytest.approx(1.0, abs=1e-6)
    where = {(p.group, p.where) for p in result.parts}
    first_inference = sources[passes.index(1)].path
    assert ("surface_queries", f"input of {first_inference}") in where
    assert ("tokens", f"input of {sources[0].path}") in where  # the geometry block, via the perceiver's keys
    groups = result.by_group()
    assert set(groups) == {"surface_queries", "surface_anchors", "volume_anchors", "tokens"}
    assert all(name in positions and positions[name].shape[-2] == len(w) for name, w in groups.items())


def test_model_overview_and_rollout_views(fresh_caches: None) -> None:
    at = model_mode(TINY)
    assert [t.label for t in at.tabs][-2:] == ["Model overview", "Rollout"]
    at.session_state["view"] = "Model overview"
    at.run()
    assert not at.exception and not at.error
    assert [m for m in at.markdown if "2 calls in model order" in m.value]
    heads = at.selectbox(key="ov_head")
    assert heads.value == "mean" and len(heads.options) >= 2
    at.selectbox(key="ov_head").set_value(0).run()
    assert not at.exception and not at.error
    at.session_state["view"] = "Rollout"
    at.run()
    assert not at.exception and not at.error
    assert "Attention rollout (Abnar & Zuidema, 2020)" in " ".join(c.value for c in at.caption)
    at.selectbox(key="ro_group").set_value("surface_queries").run()
    at.number_input(key="ro_index").set_value(1).run()
    assert not at.exception and not at.error
    parts = at.dataframe[0].value
    assert abs(float(parts["weight"].sum()) - 1.0) < 1e-5
    # Back in single-layer mode the model-only tabs are gone and the page still works.
    at.radio(key="mode").set_value("Single layer").run()
    assert not at.exception and "Model overview" not in [t.label for t in at.tabs]


def test_overview_view_says_how_top_k_was_made_and_recomputes_for_every_row(fresh_caches: None) -> None:
    at = model_mode(TINY)
    at.session_state["view"] = "Model overview"
    at.run()
    assert not at.exception and not at.error
    picker = at.selectbox(key="ov_topk_rows")
    assert picker.value == 64 and "every row" in picker.options[-1]
    captions = " ".join(c.value for c in at.caption)
    assert "Top-8 mass: every query row (no group is larger than 64 rows)" in captions
    picker.set_value("every row").run()
    assert not at.exception and not at.error
    assert "Top-8 mass: every query row." in " ".join(c.value for c in at.caption)


def test_a_slow_overview_runs_in_the_background_and_can_be_stopped(
    fresh_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from noether.explorer.ui import view_model_overview as view

    monkeypatch.setattr(view, "AUTO_COMPUTE_SECONDS", -1.0)  # every overview counts as slow
    gate = threading.Event()
    real = view.model_overview

    def held(*args: object, **kwargs: object) -> object:
        assert gate.wait(timeout=60), "the test never released the job"
        return real(*args, **kwargs)

    monkeypatch.setattr(view, "model_overview", held)
    at = model_mode(TINY)
    at.session_state["view"] = "Model overview"
    at.run()
    assert not at.exception and not at.error
    assert "in the background" in " ".join(c.value for c in at.caption)
    assert not [m for m in at.markdown if "calls in model order" in m.value]  # nothing drawn while the job runs
    at.button(key="ov_stop").click().run()
    gate.set()
    keeper = at.session_state[view.JOBS]
    (key,) = [k for k in keeper._jobs if k[-1] == 64]
    job = keeper.get(key)
    assert job is not None and job.wait(timeout=60)
    at.run()
    assert "Overview stopped" in " ".join(i.value for i in at.info)
    at.button(key="ov_restart").click().run()
    job = keeper.get(key)
    assert job is not None and job.wait(timeout=60) and job.state == "done"
    at.run()
    assert not at.exception and not at.error
    assert [m for m in at.markdown if "2 calls in model order" in m.value]


def test_overview_command_prints_the_calls_and_writes_json_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    numbers, page = tmp_path / "o.json", tmp_path / "o.html"
    assert cli_main(["overview", str(TINY), "--out", str(numbers), "-q"]) == 0
    out = capsys.readouterr().out
    assert "encoder#0" in out and "block#0" in out and "self anchor" in out
    assert "surface_queries → surface_anchors 1.000" in out
    document = json.loads(numbers.read_text())
    assert [row["call"] for row in document["calls"]] == ["encoder#0", "block#0"]
    mass = document["attention_mass"]
    assert mass["columns"][0] == "tokens → tokens" and mass["values"][1][0] is None  # block#0 has no tokens group
    assert document["top_k_rows_per_group"] == 64
    assert cli_main(["overview", str(TINY), "--out", str(page), "--top-k-rows", "all", "--head", "0", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Top-8 mass: every query row." in out and "(exact)" in out
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("plotly-graph-div") == 4 and "head 0" in html


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["--head", "9"], 1, "--head 9 does not exist"),
        (["--out", "o.png"], 2, "must end in .html or .json"),
        (["--top-k-rows", "0"], 2, "top-k-rows"),
    ],
)
def test_overview_command_refuses_bad_options(
    argv: list[str], code: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["overview", str(TINY), "-q", *argv])
        assert exit_info.value.code == 2
    else:
        assert cli_main(["overview", str(TINY), "-q", *argv]) == code
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_overview_command_refuses_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a capture at all")
    assert cli_main(["overview", str(bad), "-q"]) == 1
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "Traceback" not in err


def test_overview_command_default_sample_is_the_librarys() -> None:
    from noether.explorer import cli_overview, layer_stats

    assert cli_overview.DEFAULT_TOP_K_ROWS == layer_stats.DEFAULT_TOP_K_ROWS
