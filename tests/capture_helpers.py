"""Write capture files for tests by calling modules directly, following the capture format (version 1)."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.modeling.modules.attention import DotProductAttention, MixedAttention

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Recorder:
    """Calls modules and records each call as the capture format describes."""

    activations_dtype: str = "float32"
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, str] = field(default_factory=dict)
    complex_tensors: list[str] = field(default_factory=list)
    not_explorable: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def _activation(self, key: str, tensor: torch.Tensor) -> str:
        if tensor.is_complex():
            self.tensors[key] = torch.view_as_real(tensor.detach()).clone().contiguous()
            self.complex_tensors.append(key)
        elif tensor.is_floating_point():
            self.tensors[key] = tensor.detach().to(_DTYPES[self.activations_dtype]).clone().contiguous()
        else:
            self.tensors[key] = tensor.detach().clone().contiguous()
        return key

    def _module(self, path: str, module: nn.Module, kind: str) -> None:
        if path in self.modules:
            return
        params = {}
        for name, tensor in module.state_dict().items():
            key = f"param/{path}/{name}"
            self.tensors[key] = tensor.detach().clone().contiguous()
            params[name] = key
        config = {
            "hidden_dim": module.q.in_features,
            "num_heads": module.num_heads,
            "use_rope": module.use_rope,
            "bias": module.q.bias is not None,
            "qk_norm": module.qk_norm,
        }
        self.modules[path] = {
            "class_name": type(module).__name__,
            "kind": kind,
            "explorable": True,
            "config": config,
            "parameters": params,
        }

    def _cache(self, prefix: str, cache: Mapping[str, Mapping[str, torch.Tensor]] | None) -> dict | None:
        if cache is None:
            return None
        return {
            group: {part: self._activation(f"{prefix}/{group}/{part}", tensor) for part, tensor in entry.items()}
            for group, entry in cache.items()
        }

    def _start(self, path: str) -> tuple[int, str]:
        index = self.counts.get(path, 0)
        self.counts[path] = index + 1
        return index, f"call/{len(self.calls)}"

    @torch.no_grad()
    def mixed(
        self,
        path: str,
        module: MixedAttention,
        x: torch.Tensor,
        token_specs: Sequence[TokenSpec],
        patterns: Sequence[AttentionPattern],
        *,
        key_padding_mask: torch.Tensor | None = None,
        freqs: torch.Tensor | None = None,
        kv_cache: dict | None = None,
    ) -> tuple[torch.Tensor, Any]:
        self._module(path, module, "mixed")
        index, prefix = self._start(path)
        output, new_cache = module(
            x, token_specs, patterns, key_padding_mask=key_padding_mask, freqs=freqs, kv_cache=kv_cache
        )
        inputs = {
            "x": self._activation(f"{prefix}/x", x),
            "key_padding_mask": None
            if key_padding_mask is None
            else self._activation(f"{prefix}/key_padding_mask", key_padding_mask),
            "freqs": None if freqs is None else self._activation(f"{prefix}/freqs", freqs),
        }
        self.calls.append(
            {
                "id": f"{path}#{index}",
                "module": path,
                "call_index": index,
                "kind": "mixed",
                "inputs": inputs,
                "token_specs": [{"name": s.name, "size": s.size} for s in token_specs],
                "attention_patterns": [
                    {"query_tokens": list(p.query_tokens), "key_value_tokens": list(p.key_value_tokens)}
                    for p in patterns
                ],
                "kv_cache": self._cache(f"{prefix}/kv_cache", kv_cache),
                "output": self._activation(f"{prefix}/output", output),
                "new_kv_cache": self._cache(f"{prefix}/new_kv_cache", new_cache),
            }
        )
        return output, new_cache

    @torch.no_grad()
    def dot_product(
        self,
        path: str,
        module: DotProductAttention,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        freqs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._module(path, module, "dot_product")
        index, prefix = self._start(path)
        output = module(x, attn_mask=attn_mask, freqs=freqs)
        self.calls.append(
            {
                "id": f"{path}#{index}",
                "module": path,
                "call_index": index,
                "kind": "dot_product",
                "inputs": {
                    "x": self._activation(f"{prefix}/x", x),
                    "attn_mask": None if attn_mask is None else self._activation(f"{prefix}/attn_mask", attn_mask),
                    "freqs": None if freqs is None else self._activation(f"{prefix}/freqs", freqs),
                },
                "kv_cache": None,
                "output": self._activation(f"{prefix}/output", output),
                "new_kv_cache": None,
            }
        )
        return output

    def opaque(self, path: str, class_name: str, kind: str, reason: str) -> None:
        """A call of a kind the explorer cannot recompute (recorded with its reason, no tensors)."""
        self.modules[path] = {
            "class_name": class_name,
            "kind": kind,
            "explorable": False,
            "config": {},
            "parameters": {},
        }
        index, _ = self._start(path)
        call_id = f"{path}#{index}"
        self.calls.append(
            {"id": call_id, "module": path, "call_index": index, "kind": kind, "inputs": {}, "output": None}
        )
        self.not_explorable.append({"id": call_id, "class_name": class_name, "reason": reason})

    def position(self, group: str, points: torch.Tensor) -> None:
        key = f"positions/{group}"
        self.tensors[key] = points.float().clone().contiguous()
        self.positions[group] = key

    def manifest(self) -> dict[str, Any]:
        return {
            "format": "noether-attention-capture",
            "format_version": 1,
            "torch_version": torch.__version__,
            "activations_dtype": self.activations_dtype,
            "modules": self.modules,
            "calls": self.calls,
            "positions": self.positions,
            "complex_tensors": self.complex_tensors,
            "not_explorable": self.not_explorable,
        }

    def save(self, path: Path) -> Path:
        return write_capture(path, self.tensors, self.manifest())


def write_capture(
    path: Path, tensors: Mapping[str, torch.Tensor], manifest: Mapping[str, Any], **metadata: str
) -> Path:
    meta = {"format": "noether-attention-capture", "format_version": "1", "manifest": json.dumps(manifest)}
    meta.update(metadata)
    save_file(dict(tensors), str(path), metadata=meta)
    return path
