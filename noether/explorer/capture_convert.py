"""Pieces every capture converter uses: the attention config, key masks, trailing padding, the scenario check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from noether.explorer.capture_file import CallEntry, Capture
from noether.explorer.scenario import Scenario, validate_scenario

if TYPE_CHECKING:
    from noether.explorer.capture_layers import Layer

_CONFIG_KEYS = ("hidden_dim", "num_heads", "use_rope", "bias", "qk_norm")


def _attention(capture: Capture, call: CallEntry) -> dict[str, Any]:
    config = capture.manifest.modules[call.module].config
    return {"kind": "mixed", **{key: config[key] for key in _CONFIG_KEYS if key in config}}


def _scenario(layer: Layer, data: Mapping[str, Any]) -> Scenario | None:
    report = validate_scenario(data)
    if report.scenario is None:
        problems = "; ".join(str(p) for p in report.problems if p.severity == "error")
        layer.reason = f"its recorded structure is not a valid scenario: {problems}"
    return report.scenario


def _trailing_padding(mask: torch.Tensor, specs: list[dict[str, Any]]) -> dict[str, int] | None:
    """run.padding when ``mask`` pads each group at its end by the same count in every sample, else None."""
    padding, start = {}, 0
    for spec in specs:
        size = spec["size"]
        if size is None:
            continue
        part = mask[:, start : start + size]
        start += size
        real = part.sum(1)
        if not bool((real == real[0]).all()):
            return None
        count = int(real[0])
        if not bool(part[:, :count].all()) or bool(part[:, count:].any()):
            return None
        if count < size:
            padding[spec["name"]] = size - count
    return padding


def _key_mask_of(attn_mask: torch.Tensor, batch: int, tokens: int, keys: int | None = None) -> torch.Tensor | None:
    """A (batch, keys) key mask equivalent to ``attn_mask`` when it masks keys only, else None (``tokens`` queries;
    ``keys`` defaults to ``tokens``, as in self-attention)."""
    mask = attn_mask
    if mask.dtype != torch.bool:
        # Additive masks: 0 keeps a key; -inf (or the dtype's lowest finite value, as recorders store it) drops it.
        dropped = mask <= torch.finfo(mask.dtype).min / 2
        if not bool(((mask == 0) | dropped).all()):
            return None
        mask = mask == 0
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    try:
        full = mask.expand(batch, mask.shape[1], tokens, tokens if keys is None else keys)
    except RuntimeError:
        return None
    rows = full[:, :1, :1, :]
    if not bool((full == rows).all()):
        return None
    return rows[:, 0, 0, :].clone()
