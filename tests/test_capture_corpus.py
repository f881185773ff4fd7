"""Bad captures of the corpus are refused with one clear problem; the CLI commands on captures, good and bad."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noether.explorer.capture_file import CaptureError, is_capture_name, load_capture, load_capture_bytes
from noether.explorer.capture_layers import capture_layers, layer_run, verify_layer
from noether.explorer.cli import main
from noether.explorer.io import load_scenario_bytes
from noether.explorer.problems import ExplorerError

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
        (["bench", str(GOOD)], 2, "give --layer PATH[#N]"),
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


GOOD_BYTES = GOOD.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    position=st.integers(min_value=0, max_value=len(GOOD_BYTES) - 1),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=len(GOOD_BYTES)),
)
def test_corrupted_captures_are_refused_or_read_never_crash(position: int, value: int, cut: int):
    """A byte changed anywhere (header, manifest or data) and the file cut anywhere: a CaptureError or a capture
    whose every layer is listed (explorable or with its reason)."""
    data = bytearray(GOOD_BYTES)
    data[position] = value
    for candidate in (bytes(data), GOOD_BYTES[:cut]):
        try:
            capture = load_capture_bytes(candidate, name="fuzzed")
        except CaptureError as exc:
            assert exc.problems and all(str(problem) for problem in exc.problems)
            continue
        for layer in capture_layers(capture):
            assert layer.explorable or layer.reason


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.slow
def test_any_manifest_value_replaced_is_refused_or_listed(data: st.DataObject, tmp_path_factory):
    """Any field of the manifest replaced by any JSON value: a CaptureError naming a place, or a capture whose
    layers are explorable or listed with a reason — never another exception."""
    import struct

    from capture_helpers import write_capture
    from safetensors.torch import load

    (length,) = struct.unpack("<Q", GOOD_BYTES[:8])
    manifest = json.loads(json.loads(GOOD_BYTES[8 : 8 + length])["__metadata__"]["manifest"])
    paths = [path for path in _paths(manifest) if path]
    path = data.draw(st.sampled_from(paths))
    target = manifest
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(JSON_VALUES)
    out = write_capture(tmp_path_factory.mktemp("fuzz") / "m.capture.safetensors", load(GOOD_BYTES), manifest)
    try:
        capture = load_capture(out)
    except CaptureError as exc:
        assert exc.problems and exc.problems[0].where
        return
    for layer in capture_layers(capture):
        assert layer.explorable or layer.reason
        if layer.explorable:
            try:
                verify_layer(layer, layer_run(layer), capture.activations_dtype)
            except ExplorerError as exc:
                assert exc.problems


@pytest.mark.parametrize(
    ("module", "field", "value", "reason"),
    [
        ("block", "use_rope", True, "use_rope=True but RoPE freqs were not recorded"),
        ("encoder", "use_rope", True, "use_rope=True but RoPE freqs were not recorded"),
        ("block", "bias", False, "bias"),
        ("block", "qk_norm", True, "qk_norm"),
        ("block", "num_heads", 3, "divisible"),
    ],
)
def test_a_config_that_contradicts_the_recording_is_explained(tmp_path: Path, module, field, value, reason):
    import struct

    from capture_helpers import write_capture
    from safetensors.torch import load

    (length,) = struct.unpack("<Q", GOOD_BYTES[:8])
    manifest = json.loads(json.loads(GOOD_BYTES[8 : 8 + length])["__metadata__"]["manifest"])
    manifest["modules"][module]["config"][field] = value
    capture = load_capture(write_capture(tmp_path / "c.capture.safetensors", load(GOOD_BYTES), manifest))
    layer = next(layer for layer in capture_layers(capture) if layer.module == module)
    if layer.explorable:
        with pytest.raises(ExplorerError) as caught:
            layer_run(layer)
        assert reason in str(caught.value)
    else:
        assert reason in layer.reason
