"""The mixed and dot_product kinds of capture layers.

A MixedAttention call (and every anchor module built on it) keeps its groups, patterns, cache sizes and padding; a
DotProductAttention call becomes one group of full self-attention. Cached groups take their rows from the recorded
call that filled the cache.
"""

import torch

from noether.explorer.capture_convert import _attention, _key_mask_of, _scenario, _trailing_padding
from noether.explorer.capture_file import CallEntry, Capture
from noether.explorer.capture_layers import Layer, _blank, _positions, _refused, converter
from noether.explorer.inputs import CapturedInputs
from noether.explorer.layout import TokenLayout
from noether.explorer.scenario import Scenario

DOT_PRODUCT_GROUP = "tokens"
"""Name of the single group a dot_product call becomes (full self-attention over all its tokens)."""


def _inconsistency(capture: Capture, call: CallEntry, freqs: torch.Tensor | None) -> str:
    """Why the recorded arguments contradict the module's config (the module would have refused them), or ''."""
    use_rope = bool(capture.manifest.modules[call.module].config.get("use_rope", False))
    if use_rope != (freqs is not None):
        return f"the module's config says use_rope={use_rope} but RoPE freqs were {'not ' if use_rope else ''}recorded."
    cached = [spec.get("name") for spec in call.token_specs or [] if spec.get("size") is None]
    missing = [name for name in cached if name not in call.caches()]
    if missing:
        return f"cached groups {missing} have no keys/values in the recorded kv_cache."
    return ""


def _linked_rows(capture: Capture, call: CallEntry, group: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """x and freqs rows of a cached group from the recorded call whose new_kv_cache filled this call's cache."""
    wanted = capture.tensors[call.caches()[group].k]
    for earlier in capture.manifest.calls:
        made_cache = earlier.caches("new_kv_cache")
        if earlier.id == call.id or group not in made_cache:
            continue
        made = capture.tensors[made_cache[group].k]
        if made.shape != wanted.shape or not torch.equal(made, wanted) or not earlier.token_specs:
            continue
        start = 0
        for spec in earlier.token_specs:
            size = spec.get("size")
            if spec.get("name") == group and isinstance(size, int):
                x = capture.tensors[earlier.inputs["x"] or ""][:, start : start + size]
                freqs_key = earlier.inputs.get("freqs")
                freqs = None if freqs_key is None else capture.tensors[freqs_key][:, start : start + size]
                return x, freqs
            start += size if isinstance(size, int) else 0
    return None


def _key_axis(
    capture: Capture, call: CallEntry, layout: TokenLayout, x: torch.Tensor, freqs: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """x and freqs on the key axis: input groups from the call, cached groups from their filling pass (or zeros)."""
    if not layout.has_cache:
        return x, freqs, True
    batch = x.shape[0]
    xs, fs, known, start = [], [], True, 0
    for group in layout.groups:
        if group.cached:
            linked = _linked_rows(capture, call, group.name)
            if linked is None:
                known = False
                xs.append(x.new_zeros(batch, group.size, x.shape[-1]))
                if freqs is not None:
                    fs.append(freqs.new_ones(freqs.shape[0], group.size, freqs.shape[-1]))
            else:
                xs.append(linked[0].to(x.dtype))
                if freqs is not None:
                    rows = linked[1]
                    if rows is None:
                        rows = freqs.new_ones(freqs.shape[0], group.size, freqs.shape[-1])
                    fs.append(rows.expand(freqs.shape[0], -1, -1))
        else:
            xs.append(x[:, start : start + group.size])
            if freqs is not None:
                fs.append(freqs[:, start : start + group.size])
            start += group.size
    return torch.cat(xs, dim=1), (torch.cat(fs, dim=1) if freqs is not None else None), known


def _captured(
    capture: Capture,
    call: CallEntry,
    scenario: Scenario,
    x: torch.Tensor,
    freqs: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> CapturedInputs:
    layout = TokenLayout.from_scenario(scenario)
    if freqs is not None and freqs.shape[0] != x.shape[0]:
        freqs = freqs.expand(x.shape[0], -1, -1)
    x_keys, freqs_keys, known = _key_axis(capture, call, layout, x.float(), freqs)
    positions, notes, recorded = _positions(capture, call, scenario, layout)
    cache = None
    if call.caches():
        cache = {
            name: {"k": capture.tensors[entry.k].float(), "v": capture.tensors[entry.v].float()}
            for name, entry in call.caches().items()
        }
    return CapturedInputs(
        x=x_keys,
        freqs=freqs_keys,
        positions=positions,
        state_dict=capture.module_state_dict(call.module),
        key_padding_mask=mask,
        kv_cache=cache,
        cached_inputs_known=known,
        notes=notes,
        recorded_positions=recorded,
    )


@converter("mixed")
def mixed_layer(capture: Capture, call: CallEntry) -> Layer:
    """A MixedAttention call (and every anchor module built on it): its groups, patterns and recorded tensors."""
    layer = _blank(capture, call)
    if not call.token_specs or call.attention_patterns is None or call.inputs.get("x") is None:
        return _refused(layer, "the call has no token_specs, attention_patterns or x recorded.")
    x = capture.tensors[call.inputs["x"]]
    freqs = capture.tensor(call.inputs.get("freqs"))
    mask = capture.tensor(call.inputs.get("key_padding_mask"))
    if _inconsistency(capture, call, freqs):
        return _refused(layer, _inconsistency(capture, call, freqs))
    specs = [{"name": spec.get("name"), "size": spec.get("size")} for spec in call.token_specs]
    cache_sizes = {}
    for spec in specs:
        if spec["size"] is None and spec["name"] in call.caches():
            cache_sizes[spec["name"]] = int(capture.tensors[call.caches()[spec["name"]].k].shape[2])
    padding = {}
    if mask is not None:
        padding = _trailing_padding(mask, specs)
        if padding is None:
            padding = {}
            layer.notes.append(
                "the recorded key_padding_mask is not trailing padding shared by all samples: weights, statistics "
                "and outputs use it exactly; the token mask view and the cost count every key as real."
            )
    data = {
        "attention": _attention(capture, call),
        "token_specs": specs,
        "attention_patterns": call.attention_patterns,
        "run": {"batch_size": x.shape[0], "kv_cache_sizes": cache_sizes, "padding": padding},
    }
    layer.scenario = _scenario(layer, data)
    if layer.scenario is not None:
        scenario = layer.scenario
        layer.make_inputs = lambda: _captured(capture, call, scenario, x, freqs, mask)
        layer.output = capture.tensor(call.output)
    return layer


@converter("dot_product")
def dot_product_layer(capture: Capture, call: CallEntry) -> Layer:
    """Full self-attention over one group; a recorded attn_mask is kept when it only masks keys."""
    layer = _blank(capture, call)
    x = capture.tensor(call.inputs.get("x"))
    if x is None:
        return _refused(layer, "the call has no x recorded.")
    if _inconsistency(capture, call, capture.tensor(call.inputs.get("freqs"))):
        return _refused(layer, _inconsistency(capture, call, capture.tensor(call.inputs.get("freqs"))))
    batch, tokens = x.shape[0], x.shape[1]
    mask = None
    attn_mask = capture.tensor(call.inputs.get("attn_mask"))
    if attn_mask is not None:
        mask = _key_mask_of(attn_mask, batch, tokens)
        if mask is None:
            return _refused(
                layer,
                f"its attn_mask {tuple(attn_mask.shape)} varies by query or head; the explorer represents a "
                "dot_product call as one group of full self-attention, optionally with masked keys.",
            )
        if bool(mask.all()):
            mask = None
    specs = [{"name": DOT_PRODUCT_GROUP, "size": tokens}]
    padding = {} if mask is None else (_trailing_padding(mask, specs) or {})
    data = {
        "attention": _attention(capture, call),
        "token_specs": specs,
        "attention_patterns": [{"query_tokens": [DOT_PRODUCT_GROUP], "key_value_tokens": [DOT_PRODUCT_GROUP]}],
        "run": {"batch_size": batch, "padding": padding},
    }
    layer.scenario = _scenario(layer, data)
    if layer.scenario is not None:
        scenario, freqs = layer.scenario, capture.tensor(call.inputs.get("freqs"))
        layer.make_inputs = lambda: _captured(capture, call, scenario, x, freqs, mask)
        layer.output = capture.tensor(call.output)
        layer.notes.append(f"a {layer.class_name} call: one group '{DOT_PRODUCT_GROUP}' of full self-attention.")
    return layer
