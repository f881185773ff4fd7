"""Start the Streamlit explorer from an installed package: the script handed to ``streamlit run`` and its settings.

The repository's ``.streamlit/config.toml`` only applies when Streamlit starts in the repository, so an installed
package passes the same settings as command-line flags; a test keeps the two identical.
"""

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from noether.explorer.problems import ExplorerError, Problem

STREAMLIT_SETTINGS: dict[str, str] = {
    "server.maxUploadSize": "2048",
    "server.headless": "true",
    "browser.gatherUsageStats": "false",
}
"""Streamlit options the app always starts with (MB uploads for weights files, no first-run prompt, no telemetry)."""

_SCRIPT = ("ui", "streamlit_app.py")


def app_script() -> Path:
    """The installed file that ``streamlit run`` executes."""
    # Wheels and source trees install as plain directories, so the traversable is a real path.
    return Path(str(resources.files("noether.explorer").joinpath(*_SCRIPT)))


def streamlit_arguments(port: int | None = None, options: Sequence[str] = ()) -> list[str]:
    """Arguments for Streamlit's command line: ``run SCRIPT``, the fixed settings, the port, then the user's options.

    The user's options come last, so that they win over the fixed settings (Streamlit keeps the last value given).
    """
    arguments = ["run", str(app_script())]
    for name, value in STREAMLIT_SETTINGS.items():
        arguments += [f"--{name}", value]
    if port is not None:
        arguments += ["--server.port", str(port)]
    return arguments + list(options)


def run_app(port: int | None = None, options: Sequence[str] = ()) -> int:
    """Serve the explorer until interrupted; returns Streamlit's exit code.

    Raises ExplorerError when the installed package has no app script (a broken or partial install).
    """
    script = app_script()
    if not script.is_file():
        raise ExplorerError(
            [
                Problem(
                    "app",
                    f"the app script {script} is missing from the installed package.",
                    "Reinstall the package (pip install --force-reinstall noether-attention-explorer).",
                )
            ]
        )
    from streamlit.web import cli as streamlit_cli

    # Streamlit's own command line, in this process: the same server, signals and option parsing as `streamlit run`.
    result = streamlit_cli.main.main(args=streamlit_arguments(port, options), prog_name="streamlit")
    return int(result or 0)
