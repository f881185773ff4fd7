"""Which files are captures, decided from the name alone so that commands that only read scenarios need no torch."""

from pathlib import Path


def is_capture_name(path: str | Path) -> bool:
    """Files named ``*.safetensors`` are read as captures (anything else as a scenario document)."""
    return str(path).lower().endswith(".safetensors")
