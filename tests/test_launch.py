"""noether-explorer app, examples and --version, without starting a server (tests/test_wheel.py starts one)."""

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import noether
from noether.explorer import launch
from noether.explorer.cli import main
from noether.explorer.presets import PRESETS, preset_path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_comes_from_the_package(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"noether-explorer {noether.__version__}\n"
    # One place: pyproject.toml reads the version from the package instead of repeating it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "noether.__version__"}


def test_examples_lists_every_preset_with_its_file(capsys):
    code, out, err = run_cli(capsys, "examples")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [preset.key for preset in PRESETS]
    for line, preset in zip(lines, PRESETS, strict=True):
        assert str(preset_path(preset.key)) in line and line.rstrip().endswith(preset.title)


def test_example_paths_are_files_that_validate(capsys):
    code, out, _ = run_cli(capsys, "examples", "--paths")
    paths = out.splitlines()
    assert code == 0 and len(paths) == len(PRESETS)
    assert all(Path(path).is_file() and yaml.safe_load(Path(path).read_text(encoding="utf-8")) for path in paths)
    code, out, err = run_cli(capsys, "validate", *paths)
    assert code == 0, err
    assert len(out.splitlines()) == len(PRESETS)


def test_a_missing_example_file_is_reported_not_raised(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr("noether.explorer.presets.EXAMPLES_DIR", tmp_path)
    code, out, err = run_cli(capsys, "examples")
    assert code == 1 and out == ""
    assert "self_anchor.yaml: missing from the installed package" in err and "Traceback" not in err


def test_app_settings_are_those_of_the_repository_config():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    flattened = {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}
    assert {name: str(value).lower() for name, value in flattened.items()} == launch.STREAMLIT_SETTINGS


def test_app_script_is_the_packaged_entry_like_app_py():
    script = launch.app_script()
    assert script.is_file() and script.parent.name == "ui"
    assert script.read_text(encoding="utf-8") == (ROOT / "app.py").read_text(encoding="utf-8")


@pytest.fixture
def streamlit_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Calls of Streamlit's command line, recorded instead of starting a server."""
    from streamlit.web import cli as streamlit_cli

    calls: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(streamlit_cli.main, "main", record)
    return calls


def test_app_hands_the_script_settings_port_and_options_to_streamlit(capsys, streamlit_calls):
    code, _, err = run_cli(capsys, "app", "--port", "8765", "--server.address", "127.0.0.1", "--theme.base", "dark")
    assert code == 0, err
    (call,) = streamlit_calls
    args = call["args"]
    assert args[:2] == ["run", str(launch.app_script())]
    for name, value in launch.STREAMLIT_SETTINGS.items():
        assert args[args.index(f"--{name}") + 1] == value
    assert args[args.index("--server.port") + 1] == "8765"
    # The user's options come last, so that they win over the defaults.
    assert args[-4:] == ["--server.address", "127.0.0.1", "--theme.base", "dark"]


def test_app_lets_the_user_override_a_default(capsys, streamlit_calls):
    assert run_cli(capsys, "app", "--server.maxUploadSize", "10")[0] == 0
    args = streamlit_calls[0]["args"]
    assert args[-2:] == ["--server.maxUploadSize", "10"] and "--server.port" not in args


@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_app_refuses_a_bad_port(capsys, streamlit_calls, port: str):
    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--port", port])
    assert exit_info.value.code == 2
    assert "--port" in capsys.readouterr().err and streamlit_calls == []


def test_other_commands_still_refuse_unknown_options(capsys, streamlit_calls):
    with pytest.raises(SystemExit) as exit_info:
        main(["examples", "--server.port", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --server.port 1" in capsys.readouterr().err


def test_app_without_its_script_says_to_reinstall(capsys, streamlit_calls, monkeypatch, tmp_path: Path):
    monkeypatch.setattr(launch, "app_script", lambda: tmp_path / "ui" / "streamlit_app.py")
    code, _, err = run_cli(capsys, "app")
    assert code == 1 and streamlit_calls == []
    assert "streamlit_app.py is missing" in err and "Reinstall" in err and "Traceback" not in err
