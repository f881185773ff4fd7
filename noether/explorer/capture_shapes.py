"""Shapes and dtypes of a capture's tensors against its manifest (config, token specs, activations dtype)."""

from typing import TYPE_CHECKING

import torch

from noether.explorer.capture_manifest import CallEntry, fail, group_caches

if TYPE_CHECKING:
    from noether.explorer.capture_file import Capture


def _expect(capture: "Capture", call: CallEntry, label: str, key: str | None, shape: tuple[int | None, ...]) -> None:
    """The tensor under ``key`` has ``shape`` (None = any size on that axis)."""
    if key is None:
        return
    got = tuple(capture.tensors[key].shape)
    if len(got) != len(shape) or any(want is not None and want != have for want, have in zip(shape, got, strict=False)):
        wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise fail(
            f"call '{call.id}' {label}",
            f"(tensor '{key}') has shape {got}; the manifest implies {wanted}.",
        )


def _module_dims(capture: "Capture", call: CallEntry) -> tuple[int, int] | None:
    config = capture.manifest.modules[call.module].config
    hidden, heads = config.get("hidden_dim"), config.get("num_heads")
    if not (isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0):
        return None
    return hidden, heads


def check_call_shapes(capture: "Capture", call: CallEntry) -> None:
    """Shapes of a mixed or dot_product call against its config and token specs (other kinds: their converter)."""
    dims = _module_dims(capture, call)
    if call.kind not in ("mixed", "dot_product") or dims is None:
        return
    hidden, heads = dims
    head_dim = hidden // heads
    activations = capture.activations_dtype
    x_key = call.inputs.get("x")
    if x_key is None:
        raise fail(f"call '{call.id}' input 'x'", "is missing; a mixed/dot_product call needs x.")
    x = capture.tensors[x_key]
    if x.ndim != 3 or x.shape[-1] != hidden:
        raise fail(
            f"call '{call.id}' input 'x'",
            f"(tensor '{x_key}') has shape {tuple(x.shape)}; hidden_dim {hidden} implies (batch, tokens, {hidden}).",
        )
    batch, tokens = x.shape[0], x.shape[1]
    if call.kind == "mixed" and call.token_specs is not None:
        sizes = [spec.get("size") for spec in call.token_specs if isinstance(spec, dict)]
        total = sum(size for size in sizes if isinstance(size, int))
        if total != tokens:
            raise fail(
                f"call '{call.id}' token_specs",
                f"add up to {total:,} input tokens but x (tensor '{x_key}') has {tokens:,}.",
            )
    for label, key in (("input 'x'", x_key), ("output", call.output)):
        if key is not None and capture.tensors[key].dtype != activations:
            raise fail(
                f"call '{call.id}' {label}",
                f"(tensor '{key}') is {capture.tensors[key].dtype}, but activations_dtype says {activations}.",
            )
    _expect(capture, call, "output", call.output, (batch, tokens, hidden))
    _expect(capture, call, "input 'key_padding_mask'", call.inputs.get("key_padding_mask"), (batch, tokens))
    mask_key = call.inputs.get("key_padding_mask")
    if mask_key is not None and capture.tensors[mask_key].dtype != torch.bool:
        raise fail(f"call '{call.id}' input 'key_padding_mask'", "is not a bool tensor.")
    freqs_key = call.inputs.get("freqs")
    if freqs_key is not None:
        freqs = capture.tensors[freqs_key]
        if not freqs.is_complex():
            raise fail(
                f"call '{call.id}' input 'freqs'",
                f"(tensor '{freqs_key}') is not listed in complex_tensors; RoPE frequencies are complex.",
            )
        if freqs.ndim != 3 or freqs.shape[0] not in (1, batch) or tuple(freqs.shape[1:]) != (tokens, head_dim // 2):
            raise fail(
                f"call '{call.id}' input 'freqs'",
                f"(tensor '{freqs_key}') has shape {tuple(freqs.shape)}; expected "
                f"({batch}, {tokens}, {head_dim // 2}) complex rotations.",
            )
    for label in ("kv_cache", "new_kv_cache"):
        tree = getattr(call, label)
        if tree and group_caches(tree) is None:
            raise fail(
                f"call '{call.id}' {label}",
                "is not a map of token group -> {k, v} tensor keys, the form MixedAttention uses.",
            )
        for group, entry in call.caches(label).items():
            for part, key in (("k", entry.k), ("v", entry.v)):
                _expect(capture, call, f"{label} '{group}' {part}", key, (batch, heads, None, head_dim))
            if capture.tensors[entry.k].shape[2] != capture.tensors[entry.v].shape[2]:
                raise fail(f"call '{call.id}' {label} '{group}'", "has keys and values of different length.")
    module = capture.manifest.modules[call.module]
    for param, key in module.parameters.items():
        expected = _parameter_shape(param, hidden, head_dim)
        tensor = capture.tensors[key]
        if expected is not None and tuple(tensor.shape) != expected:
            raise fail(
                f"module '{call.module}' parameter '{param}'",
                f"(tensor '{key}') has shape {tuple(tensor.shape)}; hidden_dim {hidden} implies {expected}.",
            )


def _parameter_shape(param: str, hidden: int, head_dim: int) -> tuple[int, ...] | None:
    base, _, kind = param.rpartition(".")
    if base in ("q", "k", "v", "proj"):
        return (hidden, hidden) if kind == "weight" else (hidden,)
    if base in ("q_norm", "k_norm"):
        return (head_dim,)
    return None


def check_positions(capture: "Capture") -> None:
    for group, key in capture.manifest.positions.items():
        tensor = capture.tensors[key]
        if tensor.ndim not in (2, 3) or tensor.dtype == torch.bool or tensor.is_complex():
            raise fail(
                f"positions '{group}'",
                f"(tensor '{key}') has shape {tuple(tensor.shape)} and dtype {tensor.dtype}; expected real "
                "(tokens, dims) or (batch, tokens, dims) coordinates.",
                "Pass positions={group: (tokens, 3) tensor} to capture_attention.",
            )
