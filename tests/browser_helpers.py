"""One way to serve the app and open it in Debian's headless chromium, for tests/test_browser.py and test_wheel.py.

Without chromium or playwright a browser test is skipped, except under CI=true, where both must be installed and
the test fails instead.
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1600, "height": 1200}


def unavailable(reason: str) -> None:
    """Skip for a missing browser piece, or fail under CI=true, where a skipped browser test would hide it."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        unavailable("chromium is not installed (apt-get install -y chromium)")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(
    command: Sequence[str],
    *,
    port: int,
    log_path: Path,
    start_s: float,
    what: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Start ``command`` (a server on ``port``), yield its URL once healthy, and always stop it afterwards."""
    with open(log_path, "w") as log:
        server = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_s
        while True:
            if server.poll() is not None:
                pytest.fail(f"{what} exited with {server.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} was not healthy within {start_s:.0f} s:\n{log_path.read_text()}")
            time.sleep(0.25)  # polling interval of a bounded health check, not synchronisation by sleeping
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A playwright browser on Debian's chromium, closed afterwards (unavailable() when a piece is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str, viewport: Mapping[str, int] = VIEWPORT) -> Any:
    page = browser.new_page(viewport=dict(viewport))
    page.goto(url, wait_until="domcontentloaded")
    return page
