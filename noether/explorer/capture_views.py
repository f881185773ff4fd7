"""What Model mode shows about a capture, as plain data: the layer list with verification, the demo capture."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noether.explorer.capture_file import Capture
from noether.explorer.capture_layers import Layer, Verification, layer_run, verify_layer
from noether.explorer.layout import TokenLayout
from noether.explorer.problems import ExplorerError
from noether.explorer.resources import asset_path

DEMO_CAPTURE_NAME = "demo_capture.safetensors"
# 500, not 512: the upload widget writes sizes in decimal units, where 512 MiB would read "1GB per file".
MAX_UPLOAD_CAPTURE_BYTES = 500 * 2**20
"""Largest capture the app accepts as an upload (it is held in memory); larger ones go through the CLI."""


def demo_capture_path() -> Path | None:
    """The shipped demo capture, when this installation has it."""
    path = asset_path(DEMO_CAPTURE_NAME)
    return path if path.is_file() else None


@dataclass(frozen=True)
class LayerStatus:
    """How a layer fared when the capture was opened."""

    verification: Verification | None = None
    problem: str = ""
    """Why it could not be recomputed (engine refusal), when it could not."""


def verify_all(layers: list[Layer], capture: Capture, memory_budget_mb: float | None = None) -> dict[str, LayerStatus]:
    """Recompute every explorable layer and compare with its recorded output (refusals are kept, not raised)."""
    statuses = {}
    for layer in layers:
        if not layer.explorable:
            continue
        try:
            run = layer_run(layer, memory_budget_mb=memory_budget_mb)
            statuses[layer.id] = LayerStatus(verify_layer(layer, run, capture.activations_dtype))
        except ExplorerError as exc:
            statuses[layer.id] = LayerStatus(problem="; ".join(str(p) for p in exc.problems))
    return statuses


def verified_text(status: LayerStatus | None) -> str:
    if status is None:
        return "not verified"
    if status.verification is None:
        return f"not recomputed: {status.problem}"
    verdict = "ok" if status.verification.ok else "MISMATCH"
    return f"{status.verification.max_abs_diff:.1e} {verdict}"


def tokens_text(layer: Layer) -> str:
    """Query x key tokens of a layer, e.g. "2,048 x 3,072"."""
    if layer.scenario is None:
        return "–"
    layout = TokenLayout.from_scenario(layer.scenario)
    return f"{layout.n_queries:,} x {layout.n_key_tokens:,}"


def layer_table(layers: list[Layer], statuses: dict[str, LayerStatus]) -> list[dict[str, Any]]:
    """One row per recorded call: path, kind, groups, tokens and the verified max difference (or the reason)."""
    rows = []
    for layer in layers:
        groups = (
            ", ".join(f"{spec.name} {layer.scenario.key_size(spec):,}" for spec in layer.scenario.token_specs)
            if layer.scenario is not None
            else ""
        )
        rows.append(
            {
                "layer": layer.id,
                "kind": f"{layer.kind} ({layer.class_name})",
                "groups": groups,
                "tokens (queries x keys)": tokens_text(layer),
                "verified max |diff|": verified_text(statuses.get(layer.id))
                if layer.explorable
                else f"not explorable: {layer.reason}",
            }
        )
    return rows


def layer_label(layer: Layer, status: LayerStatus | None) -> str:
    """The layer picker's text: path, kind, token counts and verification."""
    if not layer.explorable:
        return f"{layer.id} · {layer.kind} · not explorable"
    return f"{layer.id} · {layer.kind} · {tokens_text(layer)} tokens · {verified_text(status)}"
