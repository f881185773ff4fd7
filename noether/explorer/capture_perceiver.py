"""The perceiver kind of capture layers: a PerceiverAttention call as a two-group perceiver scenario.

Its ``q`` tokens become the query group and its ``kv`` tokens (or the recorded cache that replaced them) the
key/value group; a cached call takes the key/value rows from the recorded call that filled its cache.
"""

from typing import Any

import torch

from noether.explorer.capture_convert import _attention, _key_mask_of, _scenario
from noether.explorer.capture_file import CallEntry, Capture
from noether.explorer.capture_layers import Layer, _blank, _positions, _refused, converter
from noether.explorer.inputs import CapturedInputs
from noether.explorer.layout import TokenLayout

PERCEIVER_QUERY_GROUP = "queries"
"""Name of the query group a perceiver call becomes (its ``q`` tokens)."""
PERCEIVER_KV_GROUP = "keys_values"
"""Name of the key/value group a perceiver call becomes (its ``kv`` tokens, or the cache that replaced them)."""


def _flat_cache(capture: Capture, tree: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
    """A perceiver's cache ``{"k": key, "v": key}`` as tensors, or None when absent or shaped otherwise."""
    if not tree or set(tree) != {"k", "v"} or not all(isinstance(key, str) for key in tree.values()):
        return None
    return {part: capture.tensors[key] for part, key in tree.items()}


def _perceiver_filling_call(
    capture: Capture, call: CallEntry, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """kv and k_freqs of the recorded perceiver call whose new_kv_cache is this call's incoming cache."""
    for earlier in capture.manifest.calls:
        made = _flat_cache(capture, earlier.new_kv_cache)
        if earlier.id == call.id or earlier.kind != "perceiver" or made is None or earlier.inputs.get("kv") is None:
            continue
        if made["k"].shape == keys.shape and torch.equal(made["k"], keys):
            return capture.tensors[earlier.inputs["kv"] or ""], capture.tensor(earlier.inputs.get("k_freqs"))
    return None


def _side_by_side(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """q's tokens then kv's on one input axis; with kv_dim != hidden_dim the narrower one's rows are zero-padded
    (each projection reads only its leading features)."""
    width = max(q.shape[-1], kv.shape[-1])

    def widened(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros(*t.shape[:-1], width - t.shape[-1])], dim=-1)

    return torch.cat([widened(q), widened(kv)], dim=1)


@converter("perceiver")
def perceiver_layer(capture: Capture, call: CallEntry) -> Layer:
    """A PerceiverAttention call: its queries as one group, its keys/values (or their cache) as the other."""
    layer = _blank(capture, call)
    q = capture.tensor(call.inputs.get("q"))
    kv = capture.tensor(call.inputs.get("kv"))
    cache = _flat_cache(capture, call.kv_cache)
    if q is None or (kv is None and cache is None):
        return _refused(layer, "the call has no q, or neither kv nor a kv_cache, recorded.")
    batch, n_queries = q.shape[0], q.shape[1]
    n_kv = int(cache["k"].shape[2]) if cache is not None else int(kv.shape[1])  # type: ignore[union-attr]
    key_mask = None
    attn_mask = capture.tensor(call.inputs.get("attn_mask"))
    if attn_mask is not None:
        if cache is not None:
            return _refused(
                layer,
                "it read a kv_cache and was called with an attn_mask; the explorer represents a masked perceiver call "
                "only when it projects its keys/values from kv (yet).",
            )
        key_mask = _key_mask_of(attn_mask, batch, n_queries, n_kv)
        if key_mask is None:
            return _refused(
                layer,
                f"its attn_mask {tuple(attn_mask.shape)} varies by query or head; the explorer represents a "
                "perceiver's mask only when it masks keys/values (the same for every query and head).",
            )
        if bool(key_mask.all()):
            key_mask = None
    config = capture.manifest.modules[call.module].config
    attention = {**_attention(capture, call), "kind": "perceiver"}
    if config.get("kv_dim") is not None:
        attention["kv_dim"] = config["kv_dim"]
    data = {
        "attention": attention,
        "token_specs": [
            {"name": PERCEIVER_QUERY_GROUP, "size": n_queries},
            {"name": PERCEIVER_KV_GROUP, "size": None if cache is not None else n_kv},
        ],
        "run": {"batch_size": batch, "kv_cache_sizes": {PERCEIVER_KV_GROUP: n_kv} if cache is not None else {}},
    }
    layer.scenario = _scenario(layer, data)
    if layer.scenario is None:
        return layer
    q_freqs = capture.tensor(call.inputs.get("q_freqs"))
    k_freqs = capture.tensor(call.inputs.get("k_freqs"))
    known = True
    if cache is not None:
        filled = _perceiver_filling_call(capture, call, cache["k"])
        known = filled is not None
        kv_features = int(config.get("kv_dim") or q.shape[-1])
        kv, k_freqs = filled if filled is not None else (q.new_zeros(batch, n_kv, kv_features), None)
    assert kv is not None
    use_rope = bool(attention.get("use_rope"))
    freqs = None
    if use_rope and q_freqs is not None:
        if k_freqs is None:  # never read: the cache holds rotated keys already
            k_freqs = q_freqs.new_ones(q_freqs.shape[0], n_kv, q_freqs.shape[-1])
        q_freqs, k_freqs = q_freqs.expand(batch, -1, -1), k_freqs.expand(batch, -1, -1)
        freqs = torch.cat([q_freqs, k_freqs], dim=1)
    scenario = layer.scenario

    def make_inputs() -> CapturedInputs:
        # Built on demand, like the other kinds: placing the queries may read the next call's layer.
        positions, notes, recorded = _positions(capture, call, scenario, TokenLayout.from_scenario(scenario))
        return CapturedInputs(
            x=_side_by_side(q.float(), kv.float()),
            freqs=freqs,
            positions=positions,
            state_dict=capture.module_state_dict(call.module),
            # The module's own input: its queries (never masked as keys), then the key/value tokens.
            key_padding_mask=None
            if key_mask is None
            else torch.cat([key_mask.new_ones(batch, n_queries), key_mask.expand(batch, -1)], dim=1),
            kv_cache=None if cache is None else {PERCEIVER_KV_GROUP: {part: t.float() for part, t in cache.items()}},
            cached_inputs_known=known,
            notes=notes,
            recorded_positions=recorded,
        )

    layer.make_inputs = make_inputs
    layer.output = capture.tensor(call.output)
    layer.notes.append(
        f"a {layer.class_name} call: group '{PERCEIVER_QUERY_GROUP}' (its q) attends to '{PERCEIVER_KV_GROUP}' "
        "(its kv" + (", from the recorded kv_cache)." if cache is not None else ").")
    )
    return layer
