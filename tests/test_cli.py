"""Tests of the noether-explorer command line: exit codes, messages on stderr, exports, and no tracebacks."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from noether.explorer.cli import main
from noether.explorer.io import load_scenario_bytes

CORPUS = Path(__file__).parent / "corpus"
BAD_FILES = sorted((CORPUS / "bad").iterdir())
GOOD_FILES = sorted((CORPUS / "good").iterdir())
EXPECTED: dict[str, list[str]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
COMMANDS = ["validate", "export", "schema", "render", "bench", "examples", "app"]
SMALL = CORPUS / "good" / "minimal_mixed.yaml"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean(err: str) -> None:
    assert "Traceback" not in err
    assert "internal error" not in err


# --------------------------------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda path: path.name)
def test_validate_refuses_bad_file(capsys, path: Path):
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == 1
    assert out == ""
    assert_clean(err)
    for line in err.splitlines():
        assert line.startswith(f"{path}: "), line
    for expected in EXPECTED[path.name]:
        assert expected in err, f"{expected!r} not in:\n{err}"


@pytest.mark.parametrize("path", GOOD_FILES, ids=lambda path: path.name)
def test_validate_accepts_good_file_with_a_summary(capsys, path: Path):
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == 0, err
    assert_clean(err)
    assert out.startswith(f"{path}: ok: ")
    if path.name.endswith(".safetensors"):
        assert "capture" in out and "explorable" in out
    else:
        assert "attended pair" in out and "sparsity" in out
    assert len(out.splitlines()) == 1


def test_validate_summary_counts_attended_pairs_from_the_groups(capsys):
    code, out, _ = run_cli(capsys, "validate", str(CORPUS / "good" / "anchor_cache.yaml"))
    assert code == 0
    # surface_queries (4096) x surface_anchors (2048) + volume_queries (2048) x (1024 + 2048) cached keys.
    assert "6,144 query tokens x 9,216 keys" in out
    assert "14,680,064 attended pairs (sparsity 74.07%)" in out


def test_validate_summary_excludes_padding(capsys):
    code, out, _ = run_cli(capsys, "validate", str(CORPUS / "good" / "cross_anchor_padding.yml"))
    assert code == 0
    # (300 + 200) x 100 volume anchors + 100 x (300 - 44) unpadded surface anchors.
    assert "75,600 attended pairs" in out


def test_validate_refuses_sizes_beyond_the_token_limit_cleanly(capsys, tmp_path: Path):
    path = tmp_path / "huge.yaml"
    path.write_text(
        f"attention: {{hidden_dim: 8, num_heads: 2}}\ntoken_specs: [{{a: {10**30}}}]\n"
        "attention_patterns: [{query_tokens: [a], key_value_tokens: [a]}]\n"
    )
    code, _, err = run_cli(capsys, "validate", str(path))
    assert_clean(err)
    assert code == 1 and "token_specs" in err and "at most 2,147,483,647" in err


def test_validate_accepts_a_billion_tokens(capsys, tmp_path: Path):
    path = tmp_path / "big.yaml"
    path.write_text(
        "attention: {hidden_dim: 8, num_heads: 2}\ntoken_specs: [{a: 1000000000}]\n"
        "attention_patterns: [{query_tokens: [a], key_value_tokens: [a]}]\n"
    )
    code, out, err = run_cli(capsys, "validate", str(path))
    assert_clean(err)
    assert code == 0 and f"{10**18:,} attended pairs" in out


def test_validate_prints_warnings_and_exits_zero(capsys):
    code, out, err = run_cli(capsys, "validate", str(CORPUS / "good" / "warning_unknown_extra.yaml"))
    assert code == 0
    assert "ok:" in out
    assert "warning: attention.window_size:" in err


def test_validate_many_files_reports_each_and_fails_if_any_fails(capsys):
    bad = CORPUS / "bad" / "negative_size.yaml"
    code, out, err = run_cli(capsys, "validate", str(SMALL), str(bad), str(SMALL))
    assert code == 1
    assert out.count(": ok: ") == 2
    assert f"{bad}: token_specs[1].size" in err
    assert "1 of 3 files invalid" in err


def test_validate_quiet_prints_only_problems(capsys):
    code, out, err = run_cli(capsys, "validate", "--quiet", str(SMALL))
    assert (code, out, err) == (0, "", "")


def test_validate_reads_stdin(capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(SMALL.read_bytes())))
    code, out, _ = run_cli(capsys, "validate", "-")
    assert code == 0 and out.startswith("-: ok: mixed")


def test_validate_missing_file(capsys, tmp_path: Path):
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "absent.yaml"))
    assert code == 1
    assert f"{tmp_path / 'absent.yaml'}: (file): does not exist." in err


def test_terminal_control_characters_in_names_are_escaped(capsys, tmp_path: Path):
    path = tmp_path / "escape.json"
    name = "\x1b[2J\x1b[31mred\u202e"
    document = {
        "attention": {"hidden_dim": 8, "num_heads": 2},
        "token_specs": [{"a": 4}],
        "attention_patterns": [{"query_tokens": ["a", name], "key_value_tokens": ["a"]}],
    }
    path.write_text(json.dumps(document))
    code, _, err = run_cli(capsys, "validate", str(path))
    assert code == 1
    assert "\x1b" not in err and "\u202e" not in err
    assert "\\u001b[2J\\u001b[31mred\\u202e" in err


def test_problem_flood_is_summarised(capsys, tmp_path: Path):
    path = tmp_path / "flood.json"
    document = {"attention": {"hidden_dim": 8, "num_heads": 2}, "token_specs": [{"a": -1}] * 500}
    path.write_text(json.dumps(document))
    code, _, err = run_cli(capsys, "validate", str(path))
    assert code == 1
    assert len(err.splitlines()) == 101
    assert "400 more problems not shown" in err


# --------------------------------------------------------------------------------------------------------------------
# export and schema
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_to_stdout_round_trips(capsys, fmt: str):
    code, out, err = run_cli(capsys, "export", str(CORPUS / "good" / "tricky_names.json"), "--format", fmt)
    assert code == 0 and err == ""
    report = load_scenario_bytes(out.encode("utf-8"), fmt=fmt)  # type: ignore[arg-type]
    assert report.ok
    assert "<script>alert(1)</script>" in out


def test_export_python_to_file_infers_the_format(capsys, tmp_path: Path):
    out_path = tmp_path / "snippet.py"
    code, out, _ = run_cli(capsys, "export", str(SMALL), "-o", str(out_path))
    assert code == 0 and out == ""
    compile(out_path.read_text(encoding="utf-8"), str(out_path), "exec")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_yaml_file_is_the_canonical_text(capsys, tmp_path: Path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yml"
    assert run_cli(capsys, "export", str(CORPUS / "good" / "self_anchor.json"), "-o", str(first))[0] == 0
    assert run_cli(capsys, "export", str(first), "-o", str(second))[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_export_without_a_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(SMALL)])
    assert exit_info.value.code == 2
    assert "--format" in capsys.readouterr().err


def test_export_of_invalid_file_fails_with_its_problems(capsys, tmp_path: Path):
    out_path = tmp_path / "out.json"
    code, out, err = run_cli(capsys, "export", str(CORPUS / "bad" / "dropout_too_large.yaml"), "-o", str(out_path))
    assert code == 1 and out == ""
    assert "attention.dropout" in err
    assert not out_path.exists()


def test_export_to_unwritable_place_fails_cleanly(capsys, tmp_path: Path):
    code, _, err = run_cli(capsys, "export", str(SMALL), "-o", str(tmp_path / "missing" / "out.json"))
    assert code == 1
    assert_clean(err)
    assert "cannot write" in err


def test_schema_prints_the_json_schema(capsys):
    code, out, _ = run_cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "token_specs" in schema["properties"]


# --------------------------------------------------------------------------------------------------------------------
# Usage, help, render and bench
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_for_every_command(capsys, command: str | None):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: noether-explorer")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["validate"],
        ["export", str(SMALL), "--format", "toml"],
        ["render", str(SMALL), "--out", "picture.svg"],
        ["render", str(SMALL)],
        ["render", str(SMALL), "--out", "x.png", "--head", "-1"],
        ["render", str(SMALL), "--out", "x.png", "--head", "first"],
        ["render", str(SMALL), "--out", "x.png", "--pooling", "median"],
        ["render", str(SMALL), "--out", "x.png", "--pixels", "0"],
        ["render", str(SMALL), "--out", "x.png", "--view", "heads"],
        ["bench", str(SMALL), "--repeats", "0"],
        ["bench", str(SMALL), "--memory-budget", "-5"],
        ["bench", str(SMALL), "--memory-budget", "nan"],
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_usage_errors_exit_2(capsys, argv: list[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: noether-explorer" in err
    assert_clean(err)


@pytest.mark.parametrize("command", [["render", "--out", "x.png"], ["bench"]])
def test_render_and_bench_refuse_invalid_files_before_running(capsys, command: list[str]):
    code, _, err = run_cli(capsys, command[0], str(CORPUS / "bad" / "batch_size_zero.yaml"), *command[1:])
    assert code == 1
    assert "run.batch_size" in err


@pytest.mark.parametrize("command", [["render", "--out", "x.png"], ["bench"]])
def test_render_and_bench_refuse_a_missing_checkpoint(capsys, command: list[str], tmp_path: Path):
    code, _, err = run_cli(capsys, command[0], str(SMALL), *command[1:], "--weights", str(tmp_path / "none.pt"))
    assert code == 1
    assert "--weights: no such file" in err


@pytest.mark.parametrize("view", ["mask", "weights"])
def test_render_writes_a_png_without_a_browser(capsys, tmp_path: Path, view: str):
    out_path = tmp_path / f"{view}.png"
    code, out, err = run_cli(capsys, "render", str(SMALL), "--view", view, "--pixels", "64", "--out", str(out_path))
    assert code == 0, err
    with Image.open(out_path) as image:
        assert image.format == "PNG" and min(image.size) >= 640
    assert view in out and "Traceback" not in err


def test_render_html_is_self_contained_and_escapes_markup(capsys, tmp_path: Path):
    markup = "<script>alert(1)</script>"
    scenario = tmp_path / "markup.yaml"
    scenario.write_text(
        "attention: {hidden_dim: 16, num_heads: 2}\n"
        f"token_specs: [{{'{markup}': 6}}, {{b: 4}}]\n"
        f"attention_patterns: [{{query_tokens: ['{markup}', b], key_value_tokens: ['{markup}']}}]\n",
        encoding="utf-8",
    )
    out_path = tmp_path / "weights.html"
    code, _, err = run_cli(capsys, "render", str(scenario), "--view", "weights", "--head", "1", "--out", str(out_path))
    assert code == 0, err
    page = out_path.read_text(encoding="utf-8")
    assert "Plotly.newPlot" in page and '<script src="http' not in page  # the library is inlined: works offline
    assert markup not in page and "&lt;script&gt;" in page


def test_render_refuses_an_unknown_head_and_batch(capsys, tmp_path: Path):
    code, _, err = run_cli(
        capsys, "render", str(SMALL), "--view", "weights", "--head", "99", "--out", str(tmp_path / "x.png")
    )
    assert code == 1 and "--head" in err and "99" in err
    code, _, err = run_cli(
        capsys, "render", str(SMALL), "--view", "weights", "--batch", "7", "--out", str(tmp_path / "x.png")
    )
    assert code == 1 and "--batch" in err and not (tmp_path / "x.png").exists()


def test_render_of_a_billion_tokens_is_refused_with_an_estimate(capsys, tmp_path: Path, tensor_counter):
    scenario = tmp_path / "huge.yaml"
    scenario.write_text(
        "attention: {hidden_dim: 192, num_heads: 3}\ntoken_specs: [{a: 1000000000}]\n"
        "attention_patterns: [{query_tokens: [a], key_value_tokens: [a]}]\n"
    )
    with tensor_counter:
        code, _, err = run_cli(capsys, "render", str(scenario), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "resource guard" in err and "TB" in err
    assert tensor_counter.tensor_bytes == 0  # refused from the estimate: not one tensor was made
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_render_uses_trained_weights(capsys, tmp_path: Path):
    from noether.explorer.io import load_scenario_file
    from noether.explorer.run import ExplorerRun

    scenario = load_scenario_file(SMALL).scenario
    assert scenario is not None
    module = ExplorerRun(scenario).core
    with torch.no_grad():
        module.k.weight.mul_(-3.0)
    checkpoint = tmp_path / "layer.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(checkpoint))
    default, trained = tmp_path / "default.png", tmp_path / "trained.png"
    assert run_cli(capsys, "render", str(SMALL), "--view", "weights", "--out", str(default))[0] == 0
    code, _, err = run_cli(
        capsys, "render", str(SMALL), "--view", "weights", "--weights", str(checkpoint), "--out", str(trained)
    )
    assert code == 0 and "trained weights loaded" in err
    assert default.read_bytes() != trained.read_bytes()


def test_render_explains_a_checkpoint_of_another_width(capsys, tmp_path: Path):
    checkpoint = tmp_path / "wide.safetensors"
    save_file(
        {
            f"{n}.{p}": torch.zeros(96, 96) if p == "weight" else torch.zeros(96)
            for n in ("q", "k", "v", "proj")
            for p in ("weight", "bias")
        },
        str(checkpoint),
    )
    code, _, err = run_cli(capsys, "render", str(SMALL), "--weights", str(checkpoint), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "hidden_dim: 96" in err and "Traceback" not in err


@pytest.mark.slow
def test_bench_reports_backends_and_agreement(capsys):
    code, out, err = run_cli(capsys, "bench", str(SMALL), "--repeats", "2")
    assert code == 0, err
    assert "per-pattern MixedAttention" in out and "dense masked SDPA" in out and "FlexAttention" in out
    assert "attended pairs" in out and "x the forward pass" in out


# --------------------------------------------------------------------------------------------------------------------
# The installed entry point, once over the whole corpus
# --------------------------------------------------------------------------------------------------------------------


def console_script() -> str:
    found = shutil.which("noether-explorer", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("noether-explorer console script is not installed next to this interpreter")
    return found


@pytest.mark.slow  # a fresh process imports torch and the engine
def test_console_script_over_the_whole_corpus():
    files = [str(path) for path in BAD_FILES + GOOD_FILES]
    result = subprocess.run(
        [console_script(), "validate", *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for path in BAD_FILES:
        assert f"{path}: " in result.stderr
        assert f"{path}: ok" not in result.stdout
    for path in GOOD_FILES:
        assert f"{path}: ok: " in result.stdout
    assert f"{len(BAD_FILES)} of {len(files)} files invalid" in result.stderr


def test_python_dash_m_runs_the_same_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "noether.explorer", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: noether-explorer")


# --------------------------------------------------------------------------------------------------------------------
# Streams and the last-resort handler
# --------------------------------------------------------------------------------------------------------------------


def test_export_to_a_non_utf8_stdout_still_writes_utf8(monkeypatch: pytest.MonkeyPatch):
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    assert main(["export", str(CORPUS / "good" / "tricky_names.json"), "--format", "json"]) == 0
    sys.stdout.flush()
    assert "Strömung_名前_😀" in raw.getvalue().decode("utf-8")


def test_problems_on_a_non_utf8_stderr_are_escaped_not_fatal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path = tmp_path / "名前.yaml"
    path.write_text("attention: {hidden_dim: 8, num_heads: 3}\n", encoding="utf-8")
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="ascii"))
    assert main(["validate", str(path)]) == 1
    sys.stderr.flush()
    err = raw.getvalue().decode("ascii")
    assert "\\u540d\\u524d.yaml: attention: The 'hidden_dim' must be divisible" in err


def test_unexpected_errors_become_one_line(capsys, monkeypatch: pytest.MonkeyPatch):
    def broken(scenario: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr("noether.explorer.cli_scenario.scenario_summary", broken)
    code, _, err = run_cli(capsys, "validate", str(SMALL))
    assert code == 1
    assert err == "noether-explorer: internal error (RuntimeError: boom); please report it with the input.\n"
