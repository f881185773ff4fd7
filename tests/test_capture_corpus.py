"""Bad captures of the corpus are refused with one clear problem; the CLI commands on captures, good and bad."""

import json
from pathlib import Path

import pytest
import yaml

from noether.explorer.capture_file import CaptureError, is_capture_name, load_capture, load_capture_bytes
from noether.explorer.capture_layers import capture_layers
from noether.explorer.cli import main
from noether.explorer.io import load_scenario_bytes

CORPUS = Path(__file__).parent / "corpus"
BAD_CAPTURES = sorted(path for path in (CORPUS / "bad").iterdir() if is_capture_name(path))
EXPECTED: dict[str, list[str]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
GOOD = CORPUS / "good" / "tiny.capture.safetensors"
UNKNOWN_GROUP = CORPUS / "good" / "tiny_unknown_group.capture.safetensors"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err


def test_the_corpus_covers_every_kind_of_bad_capture():
    names = " ".join(path.name for path in BAD_CAPTURES)
    for kind in ("truncated", "unknown_version", "missing_tensor", "extra_tensor", "shape_mismatch", "nan", "inf"):
        assert kind in names
    assert "pickle" in names and "torch_save" in names and "huge_header" in names


@pytest.mark.parametrize("path", BAD_CAPTURES, ids=lambda path: path.name)
def test_bad_capture_is_one_problem_naming_the_entry(path: Path):
    with pytest.raises(CaptureError) as caught:
        load_capture(path)
    assert len(caught.value.problems) == 1
    text = str(caught.value.problems[0])
    for expected in EXPECTED[path.name]:
        assert expected in text, f"{path.name}: {expected!r} not in {text!r}"
    # The same bytes as an upload give the same problem.
    with pytest.raises(CaptureError) as uploaded:
        load_capture_bytes(path.read_bytes(), name=path.name)
    assert str(uploaded.value.problems[0]) == text


@pytest.mark.parametrize("path", BAD_CAPTURES, ids=lambda path: path.name)
@pytest.mark.parametrize("command", [["capture-info"], ["export", "--format", "json", "--layer", "block"]])
def test_cli_refuses_bad_capture_with_exit_1(capsys, path: Path, command: list[str]):
    argv = [command[0], str(path), *command[1:]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert_clean(err)
    assert EXPECTED[path.name][0] in err
    assert out == ""


def test_an_oversized_capture_is_refused_before_reading(tmp_path: Path):
    with pytest.raises(CaptureError, match=r"MB; captures are read up to"):
        load_capture(GOOD, max_bytes=1000)
    with pytest.raises(CaptureError, match=r"float16"):
        load_capture_bytes(GOOD.read_bytes(), max_bytes=1000)


def test_a_scenario_loader_never_reads_a_capture():
    report = load_scenario_bytes(GOOD.read_bytes(), name="tiny.capture.safetensors")
    assert not report.ok


def test_capture_info_lists_every_call_verified(capsys):
    code, out, err = run_cli(capsys, "capture-info", str(GOOD), "-q")
    assert code == 0, err
    assert_clean(err)
    rows = out.splitlines()
    assert "2 calls of 2 modules" in rows[0]
    assert rows[1].strip().startswith("encoder#0  dot_product (DotProductAttention)")
    assert "groups [tokens=6]" in rows[1] and "36 attended pairs (100.0%)" in rows[1]
    assert rows[2].strip().startswith("block#0  mixed (MixedAttention)")
    assert "surface_anchors=4, surface_queries=2" in rows[2]
    assert "surface_anchors+surface_queries->surface_anchors" in rows[2]
    assert "24 attended pairs" in rows[2]
    assert all(" ok (tol 1e-05)" in row for row in rows[1:])


def test_capture_info_lists_a_layer_that_is_not_a_valid_scenario(capsys):
    code, out, err = run_cli(capsys, "capture-info", str(UNKNOWN_GROUP), "-q")
    assert code == 0, err
    assert "block#0  mixed (MixedAttention)  not explorable" in out
    assert "'surface_anchor' is not a group in token_specs" in out
    layers = capture_layers(load_capture(UNKNOWN_GROUP))
    assert [layer.explorable for layer in layers] == [True, False]


@pytest.mark.parametrize(("view", "suffix"), [("mask", ".png"), ("weights", ".png"), ("weights", ".html")])
def test_render_a_layer(capsys, tmp_path: Path, view: str, suffix: str):
    out_file = tmp_path / f"layer{suffix}"
    code, out, err = run_cli(capsys, "render", str(GOOD), "--layer", "block#0", "--view", view, "--out", str(out_file))
    assert code == 0, err
    assert_clean(err)
    assert out_file.stat().st_size > 0
    assert f"{view}, 6 x 6 cells" in out


def test_export_a_layer_gives_a_scenario_that_validates(capsys, tmp_path: Path):
    code, out, err = run_cli(capsys, "export", str(GOOD), "--layer", "block", "--format", "json")
    assert code == 0, err
    scenario = json.loads(out)
    assert scenario["token_specs"] == [{"name": "surface_anchors", "size": 4}, {"name": "surface_queries", "size": 2}]
    assert scenario["attention"]["hidden_dim"] == 8 and scenario["attention"]["num_heads"] == 2
    exported = tmp_path / "layer.json"
    exported.write_text(out, encoding="utf-8")
    code, _, err = run_cli(capsys, "validate", str(exported))
    assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["render", str(GOOD), "--out", "x.png"], 2, "give --layer PATH[#N]"),
        (["export", str(GOOD), "--format", "json"], 2, "give --layer PATH[#N]"),
        (["render", str(GOOD), "--layer", "block", "--weights", "w.pt", "--out", "x.png"], 2, "--weights does not"),
        (["export", str(CORPUS / "good" / "minimal_mixed.yaml"), "--layer", "x", "--format", "json"], 2, "capture"),
        (["export", str(GOOD), "--layer", "blok#0", "--format", "json"], 1, "Did you mean 'block#0'"),
        (["render", str(GOOD), "--layer", "block", "--head", "7", "--out", "x.png"], 1, "--head: 7 is not a head"),
    ],
)
def test_capture_usage_and_layer_errors(capsys, argv: list[str], code: int, message: str):
    if code == 2:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
    else:
        got, _, err = run_cli(capsys, *argv)
        assert got == code
    assert_clean(err)
    assert message in err
