"""Record every attention call of a model's forward pass into one self-describing safetensors file.

Usage::

    with capture_attention(model, positions={"surface_anchors": coords}) as cap:
        model(**inputs)
    cap.save("model.capture.safetensors")

Attention modules are recognised by structure (``q``, ``k``, ``v``, ``proj`` submodules) and by the names of their
``forward`` parameters, never by their class, so upstream Noether's classes are recorded as well as this package's.
This file imports only the standard library, torch and safetensors: where upstream owns the ``noether`` import
name it is copied or loaded under a name of its own (see README, "Recording where upstream Noether is installed").
The file format is described in README, "Capture file format". It stays one file so that it can be copied alone.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import os
from collections.abc import Iterable, Mapping
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

__all__ = ["DEFAULT_MAX_BYTES", "FORMAT", "FORMAT_VERSION", "Capture", "CaptureError", "capture_attention", "recognise"]

FORMAT = "noether-attention-capture"
FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 2 * 1024**3
"""Largest file ``save`` writes unless told otherwise (2 GiB)."""

# forward() parameter names that identify each kind; a module matches when its signature starts with them.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "mixed": ("x", "token_specs", "attention_patterns", "key_padding_mask", "freqs", "kv_cache"),
    "perceiver": ("q", "kv", "attn_mask", "q_freqs", "k_freqs", "kv_cache"),
    "dot_product": ("x", "attn_mask", "freqs"),
}
# Tensor arguments recorded under "inputs" per kind; the values marked True are activations (stored in
# activations_dtype), the others keep their dtype (masks, RoPE frequencies).
_TENSOR_INPUTS: dict[str, dict[str, bool]] = {
    "mixed": {"x": True, "key_padding_mask": False, "freqs": False},
    "untied_mixed": {"x": True, "key_padding_mask": False, "freqs": False},
    "perceiver": {"q": True, "kv": True, "attn_mask": False, "q_freqs": False, "k_freqs": False},
    "dot_product": {"x": True, "attn_mask": False, "freqs": False},
}
_PROJECTIONS = ("q", "k", "v", "proj")
_ACTIVATION_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SKIPPED_REASON = "has q, k, v and proj but a forward signature of no recorded kind; its calls are not recorded."
_UNTIED_REASON = (
    "per-domain weight banks (q/k/v/proj hold one matrix per token domain): the explorer cannot recompute this "
    "kind yet; the call is recorded with its inputs and output."
)


class CaptureError(ValueError):
    """A model, argument or file that cannot be recorded; the message names the module, argument or setting."""


class _Skipped:
    """A tensor that was not copied because the capture already exceeds ``max_bytes`` (only its size is kept)."""

    def __init__(self, shape: torch.Size, dtype: torch.dtype) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype

    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * self.dtype.itemsize


def recognise(module: nn.Module) -> str | None:
    """The kind of attention module ``module`` is (mixed, untied_mixed, perceiver, dot_product), or None."""
    if not all(isinstance(getattr(module, name, None), nn.Module) for name in _PROJECTIONS):
        return None
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names = tuple(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    for kind, expected in SIGNATURES.items():
        if names[: len(expected)] == expected:
            if kind == "mixed" and not isinstance(getattr(module.q, "weight", None), torch.Tensor):
                return "untied_mixed"
            return kind
    return None


def _module_config(module: nn.Module, kind: str) -> dict[str, Any]:
    num_heads = getattr(module, "num_heads", None)
    head_dim = getattr(module, "head_dim", None)
    if not isinstance(num_heads, int) or not isinstance(head_dim, int):
        raise CaptureError(f"{type(module).__name__} has no integer num_heads/head_dim attributes to record.")
    config: dict[str, Any] = {
        "hidden_dim": num_heads * head_dim,
        "num_heads": num_heads,
        "use_rope": bool(getattr(module, "use_rope", False)),
        "bias": getattr(module.q, "bias", None) is not None,
        "qk_norm": bool(getattr(module, "qk_norm", False)),
    }
    k_weight = getattr(module.k, "weight", None)
    if kind == "perceiver" and isinstance(k_weight, torch.Tensor):
        config["kv_dim"] = int(k_weight.shape[1])
    if kind == "untied_mixed" and isinstance(getattr(module.q, "num_types", None), int):
        config["num_types"] = module.q.num_types
    return config


def _read_token_spec(item: object) -> dict[str, Any]:
    """A token group as {"name", "size"} from a pydantic TokenSpec (any package), a dict, or {name: size}."""
    if isinstance(item, Mapping):
        if "name" in item:
            name, size = item["name"], item.get("size")
        elif len(item) == 1:
            name, size = next(iter(item.items()))
        else:
            raise TypeError(f"a dict item needs 'name' and 'size' or one {{name: size}} pair, got keys {list(item)}")
    elif hasattr(item, "name") and hasattr(item, "size"):
        name, size = item.name, item.size
    else:
        raise TypeError(f"expected a TokenSpec-like object with name and size, got {type(item).__name__}")
    if not isinstance(name, str) or not (size is None or (isinstance(size, Integral) and not isinstance(size, bool))):
        raise TypeError(f"name must be a str and size an int or None, got {name!r}: {size!r}")
    return {"name": name, "size": None if size is None else int(size)}


def _read_pattern(item: object) -> dict[str, list[str]]:
    """An attention pattern as {"query_tokens", "key_value_tokens"} from a pydantic object or a dict."""
    fields = ("query_tokens", "key_value_tokens")
    if isinstance(item, Mapping) and all(name in item for name in fields):
        values = [item[name] for name in fields]
    elif all(hasattr(item, name) for name in fields):
        values = [getattr(item, name) for name in fields]
    else:
        raise TypeError(f"expected an AttentionPattern-like object with {list(fields)}, got {type(item).__name__}")
    if not all(isinstance(v, Iterable) and not isinstance(v, str | bytes) for v in values):
        raise TypeError(f"query_tokens and key_value_tokens must be lists of group names, got {values!r}")
    names = [list(v) for v in values]
    if not all(isinstance(n, str) for group in names for n in group):
        raise TypeError(f"query_tokens and key_value_tokens must be lists of group names, got {names!r}")
    return dict(zip(fields, names, strict=True))


def _read_list(values: object, reader: Any, argument: str) -> list[Any]:
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise TypeError(f"{argument} must be a list, got {type(values).__name__}")
    items = []
    for index, item in enumerate(values):
        try:
            items.append(reader(item))
        except TypeError as error:
            raise TypeError(f"{argument}[{index}]: {error}") from None
    return items


class Capture:
    """Context manager that records the attention calls of ``model``; use :func:`capture_attention` to make one.

    After the ``with`` block: ``calls`` lists the recorded calls (manifest entries), ``estimated_bytes`` is the size
    the file will have, ``save(path)`` writes it.
    """

    def __init__(
        self,
        model: nn.Module,
        positions: Mapping[str, torch.Tensor] | None = None,
        layers: str | Iterable[str] | None = None,
        activations_dtype: torch.dtype | str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CaptureError(f"capture_attention needs a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.layers = [layers] if isinstance(layers, str) else (None if layers is None else list(layers))
        if self.layers is not None and not all(isinstance(p, str) for p in self.layers):
            raise CaptureError(f"layers must be glob patterns (str) on module paths, got {self.layers!r}.")
        self.activations_dtype = _parse_activations_dtype(activations_dtype)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise CaptureError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.calls: list[dict[str, Any]] = []
        self.modules: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self._positions = dict(positions or {})
        self._tensors: dict[str, torch.Tensor | _Skipped] = {}
        self._complex: list[str] = []
        self._bytes = 0
        self._targets: dict[nn.Module, tuple[str, str, inspect.Signature]] = {}
        self._pending: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self._call_counts: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- context manager -------------------------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        if self._targets:
            raise CaptureError("A Capture records one `with` block; call capture_attention(...) again for another.")
        recognised = {}
        for path, module in self.model.named_modules():
            kind = recognise(module)
            if kind is not None:
                recognised[path] = (module, kind)
            elif all(isinstance(getattr(module, name, None), nn.Module) for name in _PROJECTIONS):
                # Attention-like but another kind (e.g. Transolver): listed in the file, so nothing goes unnoticed.
                self.skipped[path] = type(module).__name__
        if not recognised:
            raise CaptureError(
                "No attention module recognised in the model. Module classes seen: "
                f"{_class_names(self.model)}. Recognised are modules with q, k, v and proj submodules whose forward "
                "starts with (x, token_specs, attention_patterns, key_padding_mask, freqs, kv_cache), "
                "(q, kv, attn_mask, q_freqs, k_freqs, kv_cache) or (x, attn_mask, freqs)."
            )
        kept = {p: mk for p, mk in recognised.items() if self.layers is None or _matches(p, self.layers)}
        if not kept:
            raise CaptureError(
                f"layers={self.layers} matches none of the recognised attention modules: "
                f"{_shortlist(list(recognised))}; patterns are globs on module paths from named_modules()."
            )
        self._store_positions()
        for path, (module, kind) in kept.items():
            self._targets[module] = (path, kind, inspect.signature(module.forward))
            self._handles.append(module.register_forward_pre_hook(self._before_call, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._after_call, with_kwargs=True))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()
        if exc_type is None and not self.calls:
            raise CaptureError(
                "The forward pass made no call to a recognised attention module "
                f"(recognised: {_shortlist([path for path, _, _ in self._targets.values()])}); "
                f"module classes seen: {_class_names(self.model)}. Run the model inside the `with` block."
            )

    # -- hooks -----------------------------------------------------------------------------------------------------
    def _before_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        path, kind, signature = self._targets[module]
        call_index = self._call_counts.get(path, 0)
        entry: dict[str, Any] = {"id": f"{path}#{call_index}", "module": path, "call_index": call_index, "kind": kind}
        where = f"{path or '<root>'} ({type(module).__name__}, call {entry['id']})"
        mark = (len(self._tensors), len(self._complex), self._bytes)
        try:
            self._read_call(entry, module, signature.bind(*args, **kwargs).arguments, f"call/{len(self.calls)}")
        except (TypeError, CaptureError) as error:
            # Nothing of a call that could not be read stays behind (the file would hold tensors no entry names).
            for key in list(self._tensors)[mark[0] :]:
                del self._tensors[key]
            del self._complex[mark[1] :]
            self._bytes = mark[2]
            raise CaptureError(f"{where}: could not record this {kind} call: {error}.") from None
        self._call_counts[path] = call_index + 1
        self._pending.setdefault(id(module), []).append((len(self.calls), entry))
        self.calls.append(entry)

    def _read_call(self, entry: dict[str, Any], module: nn.Module, arguments: dict[str, Any], prefix: str) -> None:
        kind = entry["kind"]
        entry["inputs"] = {
            name: self._store_argument(f"{prefix}/{name}", arguments.get(name), activation)
            for name, activation in _TENSOR_INPUTS[kind].items()
        }
        if kind in ("mixed", "untied_mixed"):
            entry["token_specs"] = _read_list(arguments.get("token_specs"), _read_token_spec, "token_specs")
            patterns = arguments.get("attention_patterns")
            if patterns is not None or kind == "mixed":
                entry["attention_patterns"] = _read_list(patterns, _read_pattern, "attention_patterns")
        entry["kv_cache"] = self._store_tree(f"{prefix}/kv_cache", arguments.get("kv_cache"), "kv_cache")
        entry["training"] = module.training
        if entry["module"] not in self.modules:
            self._record_module(entry["module"], module, kind)

    def _after_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        index, entry = self._pending[id(module)].pop()
        where = f"{entry['module'] or '<root>'} ({type(module).__name__}, call {entry['id']})"
        # Mixed and perceiver modules return (output, new_kv_cache); the others a bare tensor.
        result, new_cache = (output[0], output[1:2]) if isinstance(output, tuple) else (output, ())
        new_cache = new_cache[0] if new_cache and entry["kind"] in ("mixed", "perceiver") else None
        if not isinstance(result, torch.Tensor):
            raise CaptureError(f"{where}: the output is {type(result).__name__}, not a tensor; cannot record it.")
        try:
            entry["output"] = self._store_argument(f"call/{index}/output", result, True)
            entry["new_kv_cache"] = self._store_tree(f"call/{index}/new_kv_cache", new_cache, "new_kv_cache")
        except TypeError as error:
            raise CaptureError(f"{where}: could not read the output: {error}.") from None

    # -- storing ---------------------------------------------------------------------------------------------------
    def _record_module(self, path: str, module: nn.Module, kind: str) -> None:
        config = _module_config(module, kind)
        label = path or "<root>"
        parameters = {name: self._store(f"param/{label}/{name}", t, False) for name, t in module.state_dict().items()}
        self.modules[path] = {
            "class_name": type(module).__name__,
            "kind": kind,
            "explorable": kind != "untied_mixed",
            "config": config,
            "parameters": parameters,
        }

    def _store_argument(self, key: str, value: object, activation: bool) -> str | None:
        if value is None:
            return None
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key.rsplit('/', 1)[-1]} must be a tensor or None, got {type(value).__name__}")
        if key.endswith("/attn_mask") and value.is_floating_point():
            value = _finite_mask(value)
        return self._store(key, value, activation)

    def _store_tree(self, key: str, value: object, argument: str) -> dict[str, Any] | None:
        """A KV cache ({group: {"k", "v"}} or {"k", "v"}) as the same map with tensor keys for leaves."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise TypeError(f"{argument} must be a dict of tensors, got {type(value).__name__}")
        tree: dict[str, Any] = {}
        for name, item in value.items():
            if not isinstance(name, str) or "/" in name:
                raise TypeError(f"{argument} key {name!r} must be a str without '/'")
            if isinstance(item, Mapping):
                tree[name] = self._store_tree(f"{key}/{name}", item, f"{argument}[{name!r}]")
            elif isinstance(item, torch.Tensor):
                tree[name] = self._store(f"{key}/{name}", item, True)
            else:
                raise TypeError(f"{argument}[{name!r}] must be a tensor, got {type(item).__name__}")
        return tree

    def _store(self, key: str, tensor: torch.Tensor, activation: bool) -> str:
        tensor = tensor.detach()
        if tensor.is_complex():
            self._complex.append(key)
            tensor = torch.view_as_real(tensor.resolve_conj())
        dtype = self.activations_dtype if activation and tensor.is_floating_point() else tensor.dtype
        nbytes = tensor.numel() * dtype.itemsize
        if self._bytes + nbytes > self.max_bytes:
            # Past the budget only sizes are kept, so a huge model cannot exhaust memory before save() refuses.
            self._tensors[key] = _Skipped(tensor.shape, dtype)
        else:
            self._tensors[key] = tensor.to("cpu", dtype, copy=True, memory_format=torch.contiguous_format)
        self._bytes += nbytes
        return key

    def _store_positions(self) -> None:
        for name, coords in self._positions.items():
            if not isinstance(name, str) or not isinstance(coords, torch.Tensor) or coords.ndim not in (2, 3):
                raise CaptureError(
                    f"positions[{name!r}] must be a tensor of point coordinates, (tokens, dims) or "
                    f"(batch, tokens, dims), got {getattr(coords, 'shape', type(coords).__name__)}."
                )
            self._store(f"positions/{name}", coords, False)

    # -- the file --------------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest as written into the file."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "torch_version": torch.__version__,
            "activations_dtype": str(self.activations_dtype).removeprefix("torch."),
            "modules": self.modules,
            "calls": self.calls,
            "positions": {name: f"positions/{name}" for name in self._positions},
            "complex_tensors": list(self._complex),
            "not_explorable": [
                {"id": call["id"], "class_name": self.modules[call["module"]]["class_name"], "reason": _UNTIED_REASON}
                for call in self.calls
                if not self.modules[call["module"]]["explorable"]
            ],
            "skipped_modules": [
                {"module": path, "class_name": name, "reason": _SKIPPED_REASON} for path, name in self.skipped.items()
            ],
        }

    @property
    def estimated_bytes(self) -> int:
        """Size of the file ``save`` would write, in bytes (tensor data plus the safetensors header)."""
        data = sum(
            t.nbytes() if isinstance(t, _Skipped) else t.numel() * t.element_size() for t in self._tensors.values()
        )
        metadata = json.dumps({"__metadata__": self._metadata()})
        entries = sum(len(key) + 64 + 12 * len(t.shape) for key, t in self._tensors.items())
        return 8 + len(metadata) + entries + data

    def _metadata(self) -> dict[str, str]:
        manifest = json.dumps(self.manifest(), separators=(",", ":"))
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "manifest": manifest}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the capture to ``path`` (suggested suffix ``.capture.safetensors``) and return the path.

        The size is estimated first; above ``max_bytes`` nothing is written and a CaptureError gives the estimate.
        """
        if self._handles:
            raise CaptureError("Call save() after the `with capture_attention(...)` block has finished.")
        if not self.calls:
            raise CaptureError("Nothing was recorded: no attention call was made inside the `with` block.")
        unfinished = [call["id"] for call in self.calls if "output" not in call]
        if unfinished:
            raise CaptureError(f"Call {unfinished[0]} has no output (its forward raised); record a complete forward.")
        estimate = self.estimated_bytes
        if estimate > self.max_bytes:
            raise CaptureError(
                f"The capture would take about {_human(estimate)} ({estimate:,} bytes), over max_bytes="
                f"{_human(self.max_bytes)}; keep fewer layers (layers=...), store activations as float16 "
                "(activations_dtype=torch.float16), use fewer tokens, or raise max_bytes."
            )
        target = Path(path)
        if not target.parent.is_dir():
            raise CaptureError(f"Cannot save the capture: folder '{target.parent}' does not exist.")
        tensors = {key: t for key, t in self._tensors.items() if isinstance(t, torch.Tensor)}
        partial = target.with_name(target.name + ".partial")
        save_file(tensors, str(partial), metadata=self._metadata())
        os.replace(partial, target)
        return target


def capture_attention(
    model: nn.Module,
    positions: Mapping[str, torch.Tensor] | None = None,
    layers: str | Iterable[str] | None = None,
    activations_dtype: torch.dtype | str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Capture:
    """Record every call of the attention modules in ``model`` made inside the ``with`` block.

    Args:
        model: Any module tree containing Noether-style attention modules (this package's or upstream's).
        positions: Optional point coordinates per token group, e.g. ``{"surface_anchors": (N, 3) tensor}``, stored
            so that the spatial view shows the real geometry.
        layers: Glob pattern(s) on module paths (``named_modules()``) to record, e.g. ``"blocks.*.attn*"``.
        activations_dtype: float32 (default), float16 or bfloat16 for inputs, outputs and KV caches; parameters,
            masks, RoPE frequencies and positions keep their own dtype.
        max_bytes: ``save`` refuses files estimated above this size (default 2 GiB); recording stops copying
            tensors once past it.

    Returns:
        The :class:`Capture`; hooks exist only inside the ``with`` block, also when the forward raises.
    """
    return Capture(model, positions, layers, activations_dtype, max_bytes)


def _finite_mask(mask: torch.Tensor) -> torch.Tensor:
    """An additive float mask without infinities, so that the file holds finite values only (readers refuse others).

    Only 0 and -inf: the equivalent bool mask (True = may attend). Otherwise -inf becomes the dtype's lowest finite
    value, which gives the same softmax wherever a row has at least one key left.
    """
    if not bool(torch.isinf(mask).any()):
        return mask
    if bool(((mask == 0) | (mask == float("-inf"))).all()):
        return mask == 0
    return mask.clamp(min=torch.finfo(mask.dtype).min)


def _parse_activations_dtype(value: torch.dtype | str | None) -> torch.dtype:
    if value is None:
        return torch.float32
    name = str(value).removeprefix("torch.")
    if name not in _ACTIVATION_DTYPES:
        raise CaptureError(f"activations_dtype must be one of {sorted(_ACTIVATION_DTYPES)}, got {value!r}.")
    return _ACTIVATION_DTYPES[name]


def _matches(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _class_names(model: nn.Module) -> list[str]:
    return sorted({type(module).__name__ for module in model.modules()})[:40]


def _shortlist(paths: list[str], limit: int = 20) -> list[str]:
    names = [path or "<root>" for path in paths]
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


def _human(nbytes: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} bytes"
