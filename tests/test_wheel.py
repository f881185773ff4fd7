"""The package as a user installs it: build the sdist and the wheel, install the wheel into a fresh virtual environment
and use it from another folder, with the repository nowhere on the path.

The fresh environment gets no dependencies of its own: a .pth file puts this environment's site-packages after its
own, so that nothing is downloaded (no second torch) and the wheel's copy of the package is the one imported. The
app is served by the installed `noether-explorer app` and opened in Debian's chromium, like tests/test_browser.py.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_helpers import free_port, headless_chromium, open_page, served
from PIL import Image

import noether
from noether.explorer.presets import PRESETS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMMAND_S = 300
SERVER_START_S = 120.0
RENDER_MS = 90_000
# Not part of the package source: copying them would only slow the build down (or leak a local build into it).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "build", "dist", "*.egg-info",
    "test-artifacts", ".whl", ".gl",
)  # fmt: skip
PROBE = "noether/explorer/assets/probe_folder/probe_asset.bin"
"""A file added to assets/ in a new sub-folder: package data must take files it was never told about."""


@dataclass(frozen=True)
class Installed:
    venv: Path
    site_packages: Path
    sdist: Path
    wheel: Path
    workdir: Path
    env: dict[str, str]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=COMMAND_S, check=False
        )

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "noether-explorer"), *argv)


def _checked(command: list[str], **kwargs: object) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_S, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    source, dist = base / "source", base / "dist"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    probe = source / PROBE
    probe.parent.mkdir(parents=True)
    probe.write_bytes(b"probe")
    # Without build isolation the pinned setuptools of this environment builds, offline; `build` makes the sdist
    # first and the wheel from the unpacked sdist, so a file missing from the sdist is missing from the wheel too.
    _checked([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)])
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")

    venv = base / "venv"
    _checked([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=COMMAND_S,
        ).stdout.strip()
    )  # fmt: skip
    # Dependencies from this environment, after the fresh one's own site-packages; .pth files there (this project's
    # editable install among them) are not processed, so the repository stays off the path.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site_packages / "zz_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    _checked([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)])

    workdir = base / "elsewhere"
    workdir.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(venv, site_packages, sdist, wheel, workdir, env)


def test_sdist_and_wheel_carry_every_asset(installed: Installed) -> None:
    assets = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "noether" / "explorer" / "assets").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    assert "noether/explorer/assets/sample_point_cloud.npz" in assets
    assert "noether/explorer/assets/examples/self_anchor.yaml" in assets
    with tarfile.open(installed.sdist) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    with zipfile.ZipFile(installed.wheel) as wheel:
        in_wheel = set(wheel.namelist())
    for name in [*assets, PROBE, "noether/explorer/ui/streamlit_app.py", "noether/py.typed"]:
        assert name in in_sdist, f"{name} is missing from the sdist"
        assert name in in_wheel, f"{name} is missing from the wheel"


def test_installed_package_is_the_wheel_not_the_repository(installed: Installed) -> None:
    done = installed.run(
        str(installed.venv / "bin" / "python"),
        "-c",
        "import sys, noether, importlib.metadata as m; "
        "from noether.explorer.presets import load_preset; from noether.explorer.pointcloud import SAMPLE_PATH; "
        "load_preset('self_anchor'); assert SAMPLE_PATH.is_file(), SAMPLE_PATH; "
        "print(noether.__file__); print(SAMPLE_PATH); print(m.version('noether-attention-explorer')); "
        "print('\\n'.join(sys.path))",
    )
    assert done.returncode == 0, done.stderr
    location, sample, version, *path = done.stdout.splitlines()
    assert Path(location).is_relative_to(installed.site_packages)
    assert Path(sample).is_relative_to(installed.site_packages)
    assert version == noether.__version__
    assert not any(entry and Path(entry).resolve() == ROOT for entry in path), path

    done = installed.cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"noether-explorer {noether.__version__}"


def test_installed_examples_validate_and_render(installed: Installed) -> None:
    done = installed.cli("examples", "--paths")
    assert done.returncode == 0, done.stderr
    paths = done.stdout.splitlines()
    assert [Path(path).stem for path in paths] == [Path(preset.file).stem for preset in PRESETS]
    assert all(Path(path).is_relative_to(installed.site_packages) and Path(path).is_file() for path in paths), paths

    done = installed.cli("validate", *paths)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(PRESETS)

    # The default example takes its positions from the sample point cloud.
    out = installed.workdir / "weights.png"
    done = installed.cli("render", paths[0], "--view", "weights", "--pixels", "128", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        assert image.format == "PNG" and max(image.size) >= 64


@pytest.fixture
def installed_app(installed: Installed, tmp_path: Path) -> Iterator[str]:
    """`noether-explorer app` of the fresh environment on a free port, healthy, and stopped afterwards."""
    port = free_port()
    log_path = tmp_path / "app.log"
    command = [str(installed.venv / "bin" / "noether-explorer"), "app", "--port", str(port)]
    with served(
        [*command, "--server.fileWatcherType", "none"],
        port=port,
        log_path=log_path,
        start_s=SERVER_START_S,
        what="noether-explorer app",
        cwd=installed.workdir,
        env=installed.env,
    ) as url:
        yield url
    log = log_path.read_text()
    # The settings of .streamlit/config.toml hold although the app started in a folder without it: Streamlit says
    # these two things only when headless mode or the usage-statistics choice are not set.
    assert "Welcome to Streamlit" not in log and "Collecting usage statistics" not in log, log


def test_installed_app_serves_the_explorer_with_a_chart(installed_app: str) -> None:
    with urllib.request.urlopen(installed_app, timeout=30) as response:
        assert response.status == 200 and b'id="root"' in response.read()
    with headless_chromium() as browser:
        page = open_page(browser, installed_app)
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0", timeout=RENDER_MS
        )
        assert page.locator('[data-testid="stException"]').count() == 0
        # The default example, read from the installed package, is what the chart shows.
        labels = page.evaluate(
            """() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(gd =>
                (gd.data || []).flatMap(t => Array.isArray(t.y) ? t.y.map(String) : []))"""
        )
        assert any(label.startswith("surface_queries") for label in labels), labels
