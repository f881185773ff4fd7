"""User mistakes at the command line end in a clear message, never in the internal-error path; validation, export
and schema answer without importing torch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from noether.explorer import run as run_module
from noether.explorer.cli import main

SMALL = Path(__file__).parent / "corpus" / "good" / "minimal_mixed.yaml"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "internal error" not in captured.err and "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_render_to_a_missing_folder_is_refused_before_any_work(capsys, tmp_path: Path, monkeypatch):
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the module was built before the output was checked")

    monkeypatch.setattr(run_module, "ExplorerRun", must_not_run)
    code, _, err = cli(capsys, "render", str(SMALL), "--out", str(tmp_path / "missing" / "mask.png"))
    assert code == 1 and "cannot write" in err and "missing" in err


def test_render_onto_a_folder_is_refused(capsys, tmp_path: Path):
    (tmp_path / "view.png").mkdir()
    code, _, err = cli(capsys, "render", str(SMALL), "--out", str(tmp_path / "view.png"))
    assert code == 1 and "is a folder" in err


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("ran code from the file",))


def test_a_refused_pickle_is_explained_without_torchs_advice(capsys, tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"q.weight": Evil()}, path)
    code, out, err = cli(capsys, "render", str(SMALL), "--weights", str(path), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "ran code" not in out
    assert "weights_only" not in err and "Weights only load failed" not in err
    assert "refused" in err and "state_dict" in err


def test_a_file_that_is_no_checkpoint_says_so(capsys, tmp_path: Path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    code, _, err = cli(capsys, "render", str(SMALL), "--weights", str(path), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "neither a safetensors file nor a torch checkpoint" in err and "(101)" not in err


def test_a_projection_of_the_right_width_but_wrong_shape_does_not_advise_the_current_width(capsys, tmp_path: Path):
    hidden = 64  # minimal_mixed.yaml's hidden_dim
    weights = {f"{n}.weight": torch.zeros(hidden, hidden) for n in ("q", "k", "v", "proj")}
    weights |= {f"{n}.bias": torch.zeros(hidden) for n in ("q", "k", "v", "proj")}
    weights["k.weight"] = torch.zeros(hidden, hidden + 4)
    path = tmp_path / "odd.safetensors"
    save_file(weights, str(path))
    code, _, err = cli(capsys, "render", str(SMALL), "--weights", str(path), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "k.weight" in err
    assert f"hidden_dim: {hidden}" not in err and f"hidden_dim={hidden}" not in err


def test_a_checkpoint_of_another_width_is_one_problem(capsys, tmp_path: Path):
    weights = {f"{n}.weight": torch.zeros(96, 96) for n in ("q", "k", "v", "proj")}
    weights |= {f"{n}.bias": torch.zeros(96) for n in ("q", "k", "v", "proj")}
    path = tmp_path / "wide.safetensors"
    save_file(weights, str(path))
    code, _, err = cli(capsys, "render", str(SMALL), "--weights", str(path), "--out", str(tmp_path / "x.png"))
    lines = [line for line in err.splitlines() if "hidden_dim" in line]
    assert code == 1 and len(lines) == 1 and "hidden_dim: 96" in lines[0]


def test_summary_speaks_of_sparsity_like_the_app(capsys):
    code, out, _ = cli(capsys, "validate", str(SMALL))
    assert code == 0 and "sparsity" in out and "density" not in out
    assert "1 pattern," in out and "1 group " in out


def test_render_help_names_the_colour_scale(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = capsys.readouterr().out
    assert "block entirely" in text and "log colour scale" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", str(SMALL)],
        ["export", str(SMALL), "--format", "yaml"],
        ["schema"],
    ],
)
def test_commands_without_computation_do_not_import_torch(argv: list[str]):
    code = (
        "import sys\n"
        "from noether.explorer.cli import main\n"
        f"rc = main({argv!r})\n"
        "sys.stdout.flush()\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_weights_that_name_a_folder_say_so(capsys, tmp_path: Path):
    code, _, err = cli(capsys, "render", str(SMALL), "--weights", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert code == 1 and "is a folder, not a checkpoint file" in err and "no such file" not in err
