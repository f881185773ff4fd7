"""A capture's calls as the sources of the model overview and the rollout: one run per explorable call, in call order.

Calls the explorer cannot recompute are left out of both and named in the notes; the verified max difference comes
from the checks Model mode already made when given, or is computed here (one forward per layer).
"""

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from noether.explorer.capture_file import Capture, load_capture
from noether.explorer.capture_layers import Layer, capture_layers, layer_run, verify_layer
from noether.explorer.capture_views import LayerStatus
from noether.explorer.model_overview import LayerSource
from noether.explorer.problems import ExplorerError

Progress = Callable[[float, str], None]


def _branch(name: str) -> str:
    return name.split("_", 1)[0]


def describe_kind(layer: Layer) -> str:
    """Plain-words kind of a recorded call: self / cross / joint anchor, decoder, dot product, perceiver.

    Read from the call's structure (the anchor modules all record as MixedAttention): each pattern's keys are the
    queries' own branch (self), other branches (cross) or every branch (joint); a call under a ``decoder`` path is
    a decoder; reading anchors from a cache adds "(KV cache)".
    """
    if layer.kind == "dot_product":
        return "dot product"
    if layer.kind != "mixed" or layer.scenario is None:
        return layer.kind.replace("_", " ")
    scenario = layer.scenario
    cached = " (KV cache)" if scenario.cached_names() else ""
    if "decoder" in layer.module.lower():
        return f"decoder{cached}"
    branches = {_branch(spec.name) for spec in scenario.token_specs}
    shapes = set()
    for pattern in scenario.patterns():
        own = {_branch(name) for name in pattern.query_tokens}
        keys = {_branch(name) for name in pattern.key_value_tokens}
        if keys == branches and len(branches) > 1:
            shapes.add("joint")
        elif keys == own:
            shapes.add("self")
        elif not keys & own:
            shapes.add("cross")
        else:
            shapes.add("mixed")
    shape = shapes.pop() if len(shapes) == 1 else "mixed"
    return f"{shape} anchor{cached}" if shape != "mixed" else f"mixed{cached}"


def capture_sources(
    capture: Capture,
    *,
    statuses: Mapping[str, LayerStatus] | None = None,
    verify: bool = True,
    memory_budget_mb: float | None = None,
    progress: Progress | None = None,
) -> tuple[list[LayerSource], list[str]]:
    """Every explorable call as a :class:`LayerSource`, plus notes naming the calls left out and why."""
    sources, notes = [], []
    layers = capture_layers(capture)
    for number, layer in enumerate(layers, start=1):
        if progress is not None:
            progress((number - 1) / max(len(layers), 1), f"opening {layer.id}")
        if not layer.explorable:
            notes.append(f"{layer.id}: left out, not explorable ({layer.reason})")
            continue
        try:
            run = layer_run(layer, memory_budget_mb=memory_budget_mb)
        except ExplorerError as exc:
            notes.append(f"{layer.id}: left out, {'; '.join(str(p) for p in exc.problems)}")
            continue
        diff = None
        status = (statuses or {}).get(layer.id)
        if status is not None and status.verification is not None:
            diff = status.verification.max_abs_diff
        elif verify:
            diff = verify_layer(layer, run, capture.activations_dtype).max_abs_diff
        sources.append(LayerSource(layer.id, describe_kind(layer), run, diff))
    return sources, notes


def capture_positions(capture: Capture) -> dict[str, np.ndarray]:
    """Recorded coordinates per group, as numpy."""
    return {name: tensor.float().numpy() for name, tensor in capture.positions().items()}


def load_capture_layers(path: str | Path) -> list[LayerSource]:
    """The sources of a capture file, unverified (for benchmarks and scripts)."""
    sources, _ = capture_sources(load_capture(path), verify=False)
    return sources
