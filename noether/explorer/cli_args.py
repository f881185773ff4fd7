"""Argument types and options shared by the commands of the command line; a bad value is a usage error (exit 2)."""

import argparse
import math
from pathlib import Path
from typing import Any


def _add_run_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("file", metavar="FILE", help="scenario file")
    sub.add_argument(
        "--memory-budget",
        type=_positive_float,
        metavar="MB",
        help="largest working memory the engine may use, in MiB (default: the engine's choice)",
    )
    sub.add_argument("--weights", metavar="CKPT", help="checkpoint (.safetensors or .pt) with the attention weights")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")


def _layer_option(sub: argparse.ArgumentParser) -> None:
    from noether.explorer import cli_capture

    cli_capture.add_layer_option(sub)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _port(text: str) -> int:
    number = _whole_number(text)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port number (1 to 65535)")
    return number


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _head(text: str) -> int | str:
    return "mean" if text == "mean" else _non_negative_int(text)


def _window(text: str) -> Any:
    from noether.explorer.problems import ExplorerError
    from noether.explorer.window import parse_window

    try:
        return parse_window(text)
    except ExplorerError as exc:
        problem = exc.problems[0]
        raise argparse.ArgumentTypeError(f"{problem.message} {problem.hint}") from None


def _render_output(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".png", ".html"):
        raise argparse.ArgumentTypeError(f"'{text}' must end in .png or .html")
    return path
