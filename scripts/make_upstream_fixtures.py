"""Generate fixtures that pin the behaviour of the upstream ``emmiai-noether==2026.4.0`` attention modules.

This script must be run in an environment where ``emmiai-noether==2026.4.0`` is importable. It is NOT part of
the test suite: the tests only read the generated files under ``tests/fixtures/upstream/`` and never import
upstream. The upstream wheel declares ``Requires-Python >=3.12`` and pins ``torch==2.11.0`` plus many heavy
dependencies; only a handful of leaf modules are needed here, so the wheel is installed without its
dependencies and the heavy package ``__init__`` chains are bypassed at import time (see ``load_upstream``).
Upstream's code itself is executed unmodified.

Environment used to generate the committed fixtures (Python 3.11, CPU only)::

    python3 -m venv upstream-venv
    upstream-venv/bin/pip install torch==2.13.0 einops pydantic safetensors numpy loguru
    # the wheel declares Python >= 3.12; only its plain attention leaf modules are used:
    upstream-venv/bin/pip download --no-deps --ignore-requires-python emmiai-noether==2026.4.0 -d wheels
    upstream-venv/bin/pip install --no-deps --ignore-requires-python wheels/emmiai_noether-2026.4.0-py3-none-any.whl
    upstream-venv/bin/python scripts/make_upstream_fixtures.py

Output: ``tests/fixtures/upstream/*.safetensors`` and ``tests/fixtures/upstream/cases.json``.
Tensor key conventions inside each ``.safetensors`` file:

* ``state_dict.<upstream key>``: module parameters after a few SGD steps (so biases are non-zero).
* inputs: ``x``, ``key_padding_mask`` (bool), ``attn_mask`` (bool), ``coords``, ``freqs`` (complex RoPE
  frequencies stored as ``torch.view_as_real``, i.e. a trailing dim of size 2).
* outputs: ``out``, ``cache.<token name>.k`` / ``cache.<token name>.v`` (entries of ``new_kv_cache``),
  ``embedding`` (ContinuousSincosEmbed).
* Multi-pass (KV-cache) cases prefix the tensors of the second pass with ``query.`` (``query.x``,
  ``query.freqs``, ``query.out``, ...). ``cases.json`` lists, for every pass, which tensor holds what.
* PerceiverAttention cases: inputs ``q``, ``kv``, ``attn_mask``, ``q_freqs``, ``k_freqs``; its one-entry cache as
  ``cache.k`` / ``cache.v``; ``init_state_dict.<key>``: the parameters right after construction under the case's
  seed (before the SGD steps), pinning the initialisation bit for bit.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "upstream"
UPSTREAM_VERSION = "2026.4.0"
BATCH = 2
SGD_STEPS = 3
SGD_LR = 0.05
X_SCALE = 2.0  # inputs ~ N(0, X_SCALE^2) so that attention is reasonably peaked
COORD_SCALE = 100.0  # coords ~ U(0, COORD_SCALE)

# Packages whose ``__init__`` pulls in heavy / Python>=3.12-only modules. They are registered as empty
# namespace-like packages pointing at the real directories so that the leaf modules load from the real files.
_STUB_PACKAGES = (
    "noether.core.schemas",
    "noether.core.schemas.modules",
    "noether.core.utils.torch",
    "noether.modeling.modules",
    "noether.modeling.modules.attention",
    "noether.modeling.modules.layers",
)


class Upstream:
    """Handles to the upstream classes and functions used by this script."""

    def __init__(self) -> None:
        schemas_attention = importlib.import_module("noether.core.schemas.modules.attention")
        schemas_layers = importlib.import_module("noether.core.schemas.modules.layers")
        self.AttentionConfig = schemas_attention.AttentionConfig
        self.DotProductAttentionConfig = schemas_attention.DotProductAttentionConfig
        self.MixedAttentionConfig = schemas_attention.MixedAttentionConfig
        self.MultiBranchAnchorAttentionConfig = schemas_attention.MultiBranchAnchorAttentionConfig
        self.CrossAnchorAttentionConfig = schemas_attention.CrossAnchorAttentionConfig
        self.JointAnchorAttentionConfig = schemas_attention.JointAnchorAttentionConfig
        self.TokenSpec = schemas_attention.TokenSpec
        self.AttentionPattern = schemas_attention.AttentionPattern
        self.RopeFrequencyConfig = schemas_layers.RopeFrequencyConfig
        self.ContinuousSincosEmbeddingConfig = schemas_layers.ContinuousSincosEmbeddingConfig
        self.DotProductAttention = importlib.import_module(
            "noether.modeling.modules.attention.dot_product"
        ).DotProductAttention
        anchor = importlib.import_module("noether.modeling.modules.attention.anchor_attention")
        mixed = importlib.import_module("noether.modeling.modules.attention.anchor_attention.mixed")
        self.MixedAttention = mixed.MixedAttention
        self.SelfAnchorAttention = anchor.SelfAnchorAttention
        self.CrossAnchorAttention = anchor.CrossAnchorAttention
        self.JointAnchorAttention = anchor.JointAnchorAttention
        self.MultiBranchAnchorAttention = anchor.MultiBranchAnchorAttention
        self.PerceiverAttentionConfig = schemas_attention.PerceiverAttentionConfig
        self.PerceiverAttention = importlib.import_module(
            "noether.modeling.modules.attention.perceiver"
        ).PerceiverAttention
        self.RopeFrequency = importlib.import_module("noether.modeling.modules.layers.rope_frequency").RopeFrequency
        self.ContinuousSincosEmbed = importlib.import_module(
            "noether.modeling.modules.layers.continuous_sincos_embed"
        ).ContinuousSincosEmbed
        self.rope = importlib.import_module("noether.modeling.functional.rope").rope
        self.apply_init_method = importlib.import_module("noether.modeling.functional.init").apply_init_method
        self.InitWeightsMode = importlib.import_module("noether.core.types").InitWeightsMode
        self.module_files = {
            name: str(Path(mod.__file__).relative_to(Path(importlib.import_module("noether").__file__).parents[1]))
            for name, mod in sorted(sys.modules.items())
            if name.startswith("noether") and getattr(mod, "__file__", None)
        }


def load_upstream() -> Upstream:
    """Import the upstream leaf modules without executing the heavy package ``__init__`` files."""
    root = importlib.import_module("noether")  # noether/__init__.py is empty upstream
    base = Path(root.__file__).parent
    for name in _STUB_PACKAGES:
        parent_name, _, child = name.rpartition(".")
        parent = importlib.import_module(parent_name)  # real (light) package or an earlier stub
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(base.joinpath(*name.split(".")[1:]))]
        pkg.__package__ = name
        sys.modules[name] = pkg
        setattr(parent, child, pkg)

    # Populate the stubbed packages with the names that the leaf modules import from them.
    schemas_attention = importlib.import_module("noether.core.schemas.modules.attention")
    schemas_layers = importlib.import_module("noether.core.schemas.modules.layers")
    schemas_pkg = sys.modules["noether.core.schemas.modules"]
    for attr in dir(schemas_attention):
        if attr.endswith("Config"):
            setattr(schemas_pkg, attr, getattr(schemas_attention, attr))
    for attr in dir(schemas_layers):
        if attr.endswith("Config"):
            setattr(schemas_pkg, attr, getattr(schemas_layers, attr))
    importlib.import_module("noether.core.utils.torch.amp")
    dot_product = importlib.import_module("noether.modeling.modules.attention.dot_product")
    sys.modules["noether.modeling.modules.attention"].DotProductAttention = dot_product.DotProductAttention
    return Upstream()


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
Specs = list[tuple[str, int | None]]
Patterns = list[tuple[list[str], list[str]]]


def specs_json(specs: Specs) -> list[dict[str, Any]]:
    return [{"name": n, "size": s} for n, s in specs]


def patterns_json(patterns: Iterable[Any]) -> list[dict[str, list[str]]]:
    out = []
    for p in patterns:
        if isinstance(p, tuple):
            q, kv = p
        else:
            q, kv = p.query_tokens, p.key_value_tokens
        out.append({"query_tokens": list(q), "key_value_tokens": list(kv)})
    return out


def tensor_info(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()}


def real_freqs(freqs: torch.Tensor) -> torch.Tensor:
    assert torch.is_complex(freqs)
    return torch.view_as_real(freqs).contiguous()


def sgd_train(module: torch.nn.Module, forward: Callable[[], torch.Tensor], seed: int) -> None:
    """A few SGD steps of an MSE loss against a random target so that weights and biases are non-trivial."""
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=SGD_LR)
    gen = torch.Generator().manual_seed(seed + 12345)
    target: torch.Tensor | None = None
    for _ in range(SGD_STEPS):
        opt.zero_grad()
        out = forward()
        if target is None:
            target = torch.randn(out.shape, generator=gen)
        loss = F.mse_loss(out, target)
        loss.backward()
        opt.step()
    module.eval()


def state_dict_tensors(module: torch.nn.Module, prefix: str = "state_dict.") -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def cache_tensors(cache: dict[str, dict[str, torch.Tensor]] | None, prefix: str = "") -> dict[str, torch.Tensor]:
    if not cache:
        return {}
    out = {}
    for name, kv in cache.items():
        out[f"{prefix}cache.{name}.k"] = kv["k"].detach().clone().contiguous()
        out[f"{prefix}cache.{name}.v"] = kv["v"].detach().clone().contiguous()
    return out


def describe_cache(cache: dict[str, dict[str, torch.Tensor]] | None) -> Any:
    if cache is None:
        return None
    return list(cache.keys())


class FixtureWriter:
    """Collects cases, writes safetensors files and ``cases.json``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.cases: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, torch.Tensor]] = {}

    def add(self, case: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        name = case["name"]
        assert name not in self.files, name
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        case["file"] = f"{name}.safetensors"
        case["tensors"] = tensor_info(tensors)
        self.cases.append(case)
        self.files[name] = tensors

    def write(self, extra: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for old in self.out_dir.glob("*.safetensors"):
            old.unlink()
        for name, tensors in self.files.items():
            save_file(tensors, str(self.out_dir / f"{name}.safetensors"), metadata={"case": name})
        doc = {**extra, "cases": self.cases}
        (self.out_dir / "cases.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# case builders
# ----------------------------------------------------------------------------------------------------------------
class Builder:
    def __init__(self, up: Upstream, writer: FixtureWriter) -> None:
        self.up = up
        self.w = writer

    # -- generic pieces --------------------------------------------------------------------------------------------
    def token_specs(self, specs: Specs) -> list[Any]:
        return [self.up.TokenSpec(name=n, size=s) for n, s in specs]

    def patterns(self, patterns: Patterns) -> list[Any]:
        return [self.up.AttentionPattern(query_tokens=q, key_value_tokens=kv) for q, kv in patterns]

    def rope_freqs(self, coords: torch.Tensor, head_dim: int, input_dim: int) -> torch.Tensor:
        rf = self.up.RopeFrequency(
            self.up.RopeFrequencyConfig(hidden_dim=head_dim, input_dim=input_dim, implementation="complex")
        )
        return rf(coords)

    @staticmethod
    def n_tokens(specs: Specs) -> int:
        return sum(s for _, s in specs if s is not None)

    # -- MixedAttention ----------------------------------------------------------------------------------------------
    def mixed(
        self,
        name: str,
        seed: int,
        config: dict[str, Any],
        specs: Specs,
        patterns: Patterns,
        description: str,
        key_padding_mask: Callable[[int], torch.Tensor] | None = None,
        rope_input_dim: int | None = None,
        query_pass: tuple[Specs, Patterns] | None = None,
    ) -> None:
        """MixedAttention case; optionally with a second (KV-cached) pass."""
        up = self.up
        torch.manual_seed(seed)
        cfg = up.MixedAttentionConfig(**config)
        module = up.MixedAttention(cfg)
        n = self.n_tokens(specs)
        hidden = cfg.hidden_dim
        head_dim = cfg.hidden_dim // cfg.num_heads
        x = torch.randn(BATCH, n, hidden) * X_SCALE
        tensors: dict[str, torch.Tensor] = {"x": x}
        kpm = key_padding_mask(n) if key_padding_mask is not None else None
        if kpm is not None:
            tensors["key_padding_mask"] = kpm
        freqs = None
        if rope_input_dim is not None:
            coords = torch.rand(BATCH, n, rope_input_dim) * COORD_SCALE
            freqs = self.rope_freqs(coords, head_dim, rope_input_dim)
            tensors["coords"] = coords
            tensors["freqs"] = real_freqs(freqs)
        ts, ps = self.token_specs(specs), self.patterns(patterns)

        sgd_train(module, lambda: module(x, ts, ps, key_padding_mask=kpm, freqs=freqs)[0], seed)
        tensors.update(state_dict_tensors(module))
        with torch.no_grad():
            out, cache = module(x, ts, ps, key_padding_mask=kpm, freqs=freqs)
        tensors["out"] = out
        tensors.update(cache_tensors(cache))
        passes = [
            {
                "name": "main",
                "token_specs": specs_json(specs),
                "attention_patterns": patterns_json(patterns),
                "inputs": {
                    "x": "x",
                    "key_padding_mask": "key_padding_mask" if kpm is not None else None,
                    "freqs": "freqs" if freqs is not None else None,
                    "coords": "coords" if freqs is not None else None,
                    "kv_cache": None,
                },
                "outputs": {"out": "out"},
                "new_kv_cache": describe_cache(cache),
                "new_kv_cache_tensors": {k: {"k": f"cache.{k}.k", "v": f"cache.{k}.v"} for k in (cache or {})},
            }
        ]
        if query_pass is not None:
            q_specs, q_patterns = query_pass
            assert cache, "query pass needs a non-empty cache"
            qn = self.n_tokens(q_specs)
            qx = torch.randn(BATCH, qn, hidden) * X_SCALE
            tensors["query.x"] = qx
            q_freqs = None
            if rope_input_dim is not None:
                q_coords = torch.rand(BATCH, qn, rope_input_dim) * COORD_SCALE
                q_freqs = self.rope_freqs(q_coords, head_dim, rope_input_dim)
                tensors["query.coords"] = q_coords
                tensors["query.freqs"] = real_freqs(q_freqs)
            with torch.no_grad():
                q_out, q_cache = module(
                    qx, self.token_specs(q_specs), self.patterns(q_patterns), freqs=q_freqs, kv_cache=cache
                )
            assert q_cache is None
            tensors["query.out"] = q_out
            self._check_cache_consistency(module, specs, patterns, q_specs, q_patterns, cache, x, freqs, out)
            passes.append(
                {
                    "name": "query",
                    "token_specs": specs_json(q_specs),
                    "attention_patterns": patterns_json(q_patterns),
                    "inputs": {
                        "x": "query.x",
                        "key_padding_mask": None,
                        "freqs": "query.freqs" if q_freqs is not None else None,
                        "coords": "query.coords" if q_freqs is not None else None,
                        "kv_cache": "new_kv_cache of pass 'main' (tensors cache.<name>.k / cache.<name>.v)",
                    },
                    "outputs": {"out": "query.out"},
                    "new_kv_cache": None,
                    "new_kv_cache_tensors": {},
                }
            )
        self.w.add(
            {
                "name": name,
                "kind": "module",
                "module_class": "MixedAttention",
                "config_class": "MixedAttentionConfig",
                "description": description,
                "seed": seed,
                "config": config,
                "config_dump": cfg.model_dump(),
                "token_specs": specs_json(specs),
                "attention_patterns": patterns_json(patterns),
                "key_padding_mask_dtype": "bool" if kpm is not None else None,
                "rope": {"input_dim": rope_input_dim, "hidden_dim": head_dim, "implementation": "complex"}
                if rope_input_dim is not None
                else None,
                "passes": passes,
            },
            tensors,
        )

    def _check_cache_consistency(
        self,
        module: torch.nn.Module,
        specs: Specs,
        patterns: Patterns,
        q_specs: Specs,
        q_patterns: Patterns,
        cache: dict[str, dict[str, torch.Tensor]],
        x: torch.Tensor,
        freqs: torch.Tensor | None,
        out: torch.Tensor,
    ) -> None:
        """Sanity check (not recorded): re-running the anchor pass's own query groups through the cached path
        reproduces the anchor pass's outputs for those groups (only valid when queries attend to anchors only)."""
        offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for n_, s in specs:
            assert s is not None
            offsets[n_] = (start, start + s)
            start += s
        cached = {n_ for n_, s in q_specs if s is None}
        keep = [n_ for n_, _ in specs if n_ not in cached]
        sel = torch.cat([torch.arange(*offsets[n_]) for n_ in keep])
        re_specs = [(n_, None) if n_ in cached else (n_, dict(specs)[n_]) for n_, _ in specs]
        re_freqs = freqs[:, sel] if freqs is not None else None
        with torch.no_grad():
            re_out, _ = module(
                x[:, sel], self.token_specs(re_specs), self.patterns(q_patterns), freqs=re_freqs, kv_cache=cache
            )
        torch.testing.assert_close(re_out, out[:, sel], rtol=1e-4, atol=1e-5)

    # -- DotProductAttention -----------------------------------------------------------------------------------------
    def dot_product(
        self,
        name: str,
        seed: int,
        config: dict[str, Any],
        n: int,
        description: str,
        with_mask: bool = False,
        rope_input_dim: int | None = None,
    ) -> None:
        up = self.up
        torch.manual_seed(seed)
        cfg = up.DotProductAttentionConfig(**config)
        module = up.DotProductAttention(cfg)
        head_dim = cfg.hidden_dim // cfg.num_heads
        x = torch.randn(BATCH, n, cfg.hidden_dim) * X_SCALE
        tensors: dict[str, torch.Tensor] = {"x": x}
        attn_mask = None
        if with_mask:
            attn_mask = torch.rand(BATCH, 1, n, n) < 0.5
            attn_mask |= torch.eye(n, dtype=torch.bool)[None, None]  # every query sees at least itself
            tensors["attn_mask"] = attn_mask
        freqs = None
        if rope_input_dim is not None:
            coords = torch.rand(BATCH, n, rope_input_dim) * COORD_SCALE
            freqs = self.rope_freqs(coords, head_dim, rope_input_dim)
            tensors["coords"] = coords
            tensors["freqs"] = real_freqs(freqs)
        sgd_train(module, lambda: module(x, attn_mask=attn_mask, freqs=freqs), seed)
        tensors.update(state_dict_tensors(module))
        with torch.no_grad():
            out = module(x, attn_mask=attn_mask, freqs=freqs)
        tensors["out"] = out
        self.w.add(
            {
                "name": name,
                "kind": "module",
                "module_class": "DotProductAttention",
                "config_class": "DotProductAttentionConfig",
                "description": description,
                "seed": seed,
                "config": config,
                "config_dump": cfg.model_dump(),
                "attn_mask_dtype": "bool" if attn_mask is not None else None,
                "rope": {"input_dim": rope_input_dim, "hidden_dim": head_dim, "implementation": "complex"}
                if rope_input_dim is not None
                else None,
                "passes": [
                    {
                        "name": "main",
                        "inputs": {
                            "x": "x",
                            "attn_mask": "attn_mask" if attn_mask is not None else None,
                            "freqs": "freqs" if freqs is not None else None,
                            "coords": "coords" if freqs is not None else None,
                        },
                        "outputs": {"out": "out"},
                    }
                ],
            },
            tensors,
        )

    # -- Multi-branch anchor attention -------------------------------------------------------------------------------
    def multi_branch(
        self,
        name: str,
        seed: int,
        module_class: str,
        config: dict[str, Any],
        specs: Specs,
        description: str,
        query_specs: Specs | None = None,
        key_padding_mask: Callable[[int], torch.Tensor] | None = None,
        rope_input_dim: int | None = None,
    ) -> None:
        up = self.up
        cls = getattr(up, module_class)
        config_cls = {
            "SelfAnchorAttention": up.MultiBranchAnchorAttentionConfig,
            "CrossAnchorAttention": up.CrossAnchorAttentionConfig,
            "JointAnchorAttention": up.JointAnchorAttentionConfig,
        }[module_class]
        torch.manual_seed(seed)
        cfg = config_cls(**config)
        module = cls(cfg)
        hidden = cfg.hidden_dim
        head_dim = cfg.hidden_dim // cfg.num_heads
        n = self.n_tokens(specs)
        x = torch.randn(BATCH, n, hidden) * X_SCALE
        tensors: dict[str, torch.Tensor] = {"x": x}
        kpm = key_padding_mask(n) if key_padding_mask is not None else None
        if kpm is not None:
            tensors["key_padding_mask"] = kpm
        freqs = None
        if rope_input_dim is not None:
            coords = torch.rand(BATCH, n, rope_input_dim) * COORD_SCALE
            freqs = self.rope_freqs(coords, head_dim, rope_input_dim)
            tensors["coords"] = coords
            tensors["freqs"] = real_freqs(freqs)
        ts = self.token_specs(specs)
        sgd_train(module, lambda: module(x, ts, key_padding_mask=kpm, freqs=freqs)[0], seed)
        tensors.update(state_dict_tensors(module))
        with torch.no_grad():
            out, cache = module(x, ts, key_padding_mask=kpm, freqs=freqs)
        tensors["out"] = out
        tensors.update(cache_tensors(cache))
        derived = patterns_json(module._create_attention_patterns(ts))
        passes = [
            {
                "name": "main",
                "token_specs": specs_json(specs),
                "derived_attention_patterns": derived,
                "inputs": {
                    "x": "x",
                    "key_padding_mask": "key_padding_mask" if kpm is not None else None,
                    "freqs": "freqs" if freqs is not None else None,
                    "coords": "coords" if freqs is not None else None,
                    "kv_cache": None,
                },
                "outputs": {"out": "out"},
                "new_kv_cache": describe_cache(cache),
                "new_kv_cache_tensors": {k: {"k": f"cache.{k}.k", "v": f"cache.{k}.v"} for k in (cache or {})},
            }
        ]
        if query_specs is not None:
            assert cache
            qn = self.n_tokens(query_specs)
            qx = torch.randn(BATCH, qn, hidden) * X_SCALE
            tensors["query.x"] = qx
            q_freqs = None
            if rope_input_dim is not None:
                q_coords = torch.rand(BATCH, qn, rope_input_dim) * COORD_SCALE
                q_freqs = self.rope_freqs(q_coords, head_dim, rope_input_dim)
                tensors["query.coords"] = q_coords
                tensors["query.freqs"] = real_freqs(q_freqs)
            qts = self.token_specs(query_specs)
            with torch.no_grad():
                q_out, q_cache = module(qx, qts, freqs=q_freqs, kv_cache=cache)
            assert q_cache is None
            tensors["query.out"] = q_out
            passes.append(
                {
                    "name": "query",
                    "token_specs": specs_json(query_specs),
                    "derived_attention_patterns": patterns_json(module._create_attention_patterns(qts)),
                    "inputs": {
                        "x": "query.x",
                        "key_padding_mask": None,
                        "freqs": "query.freqs" if q_freqs is not None else None,
                        "coords": "query.coords" if q_freqs is not None else None,
                        "kv_cache": "new_kv_cache of pass 'main' (tensors cache.<name>.k / cache.<name>.v)",
                    },
                    "outputs": {"out": "query.out"},
                    "new_kv_cache": None,
                    "new_kv_cache_tensors": {},
                }
            )
        self.w.add(
            {
                "name": name,
                "kind": "module",
                "module_class": module_class,
                "config_class": type(cfg).__name__,
                "description": description,
                "seed": seed,
                "config": config,
                "config_dump": cfg.model_dump(),
                "branches": list(cfg.branches),
                "anchor_suffix": cfg.anchor_suffix,
                "token_specs": specs_json(specs),
                "attention_patterns": derived,
                "key_padding_mask_dtype": "bool" if kpm is not None else None,
                "rope": {"input_dim": rope_input_dim, "hidden_dim": head_dim, "implementation": "complex"}
                if rope_input_dim is not None
                else None,
                "passes": passes,
            },
            tensors,
        )

    # -- PerceiverAttention ------------------------------------------------------------------------------------------
    def perceiver(
        self,
        name: str,
        seed: int,
        config: dict[str, Any],
        n_queries: int,
        n_kv: int,
        description: str,
        with_mask: bool = False,
        rope_input_dim: int | None = None,
        cached_queries: int | None = None,
    ) -> None:
        """PerceiverAttention case; ``cached_queries`` adds a second pass of new queries reading the first pass's
        ``new_kv_cache`` (``kv=None``)."""
        up = self.up
        torch.manual_seed(seed)
        cfg = up.PerceiverAttentionConfig(**config)
        module = up.PerceiverAttention(cfg)
        tensors: dict[str, torch.Tensor] = state_dict_tensors(module, prefix="init_state_dict.")
        hidden, kv_dim = cfg.hidden_dim, cfg.kv_dim
        head_dim = hidden // cfg.num_heads
        q = torch.randn(BATCH, n_queries, hidden) * X_SCALE
        kv = torch.randn(BATCH, n_kv, kv_dim) * X_SCALE
        tensors.update(q=q, kv=kv)
        attn_mask = None
        if with_mask:
            attn_mask = torch.rand(BATCH, 1, n_queries, n_kv) < 0.5
            attn_mask[..., 0] = True  # every query sees at least one key
            tensors["attn_mask"] = attn_mask
        q_freqs = k_freqs = None
        if rope_input_dim is not None:
            q_coords = torch.rand(BATCH, n_queries, rope_input_dim) * COORD_SCALE
            k_coords = torch.rand(BATCH, n_kv, rope_input_dim) * COORD_SCALE
            q_freqs = self.rope_freqs(q_coords, head_dim, rope_input_dim)
            k_freqs = self.rope_freqs(k_coords, head_dim, rope_input_dim)
            tensors.update(q_freqs=real_freqs(q_freqs), k_freqs=real_freqs(k_freqs))

        def run() -> tuple[torch.Tensor, Any]:
            return module(q, kv, attn_mask=attn_mask, q_freqs=q_freqs, k_freqs=k_freqs)

        sgd_train(module, lambda: run()[0], seed)
        tensors.update(state_dict_tensors(module))
        with torch.no_grad():
            out, cache = run()
        assert cache is not None
        tensors.update(out=out, **{"cache.k": cache["k"], "cache.v": cache["v"]})
        passes = [
            {
                "name": "main",
                "inputs": {
                    "q": "q",
                    "kv": "kv",
                    "attn_mask": "attn_mask" if attn_mask is not None else None,
                    "q_freqs": "q_freqs" if q_freqs is not None else None,
                    "k_freqs": "k_freqs" if k_freqs is not None else None,
                    "kv_cache": None,
                },
                "outputs": {"out": "out"},
                "new_kv_cache": sorted(cache),
                "new_kv_cache_tensors": {"k": "cache.k", "v": "cache.v"},
            }
        ]
        if cached_queries is not None:
            qq = torch.randn(BATCH, cached_queries, hidden) * X_SCALE
            tensors["query.q"] = qq
            qq_freqs = None
            if rope_input_dim is not None:
                qq_coords = torch.rand(BATCH, cached_queries, rope_input_dim) * COORD_SCALE
                qq_freqs = self.rope_freqs(qq_coords, head_dim, rope_input_dim)
                tensors["query.q_freqs"] = real_freqs(qq_freqs)
            with torch.no_grad():
                q_out, q_cache = module(qq, None, q_freqs=qq_freqs, kv_cache=cache)
                # Sanity check (not recorded): the cached pass equals a pass that projects kv again.
                direct, _ = module(qq, kv, q_freqs=qq_freqs, k_freqs=k_freqs)
            torch.testing.assert_close(q_out, direct, rtol=0.0, atol=1e-6)
            assert q_cache is None
            tensors["query.out"] = q_out
            passes.append(
                {
                    "name": "query",
                    "inputs": {
                        "q": "query.q",
                        "kv": None,
                        "attn_mask": None,
                        "q_freqs": "query.q_freqs" if qq_freqs is not None else None,
                        "k_freqs": None,
                        "kv_cache": "new_kv_cache of pass 'main' (tensors cache.k / cache.v)",
                    },
                    "outputs": {"out": "query.out"},
                    "new_kv_cache": None,
                    "new_kv_cache_tensors": {},
                }
            )
        self.w.add(
            {
                "name": name,
                "kind": "module",
                "module_class": "PerceiverAttention",
                "config_class": "PerceiverAttentionConfig",
                "description": description,
                "seed": seed,
                "config": config,
                "config_dump": cfg.model_dump(),
                "init_state_dict": "init_state_dict.<key>: the state dict right after construction under the seed",
                "attn_mask_dtype": "bool" if attn_mask is not None else None,
                "rope": {"input_dim": rope_input_dim, "hidden_dim": head_dim, "implementation": "complex"}
                if rope_input_dim is not None
                else None,
                "passes": passes,
            },
            tensors,
        )

    # -- RopeFrequency / ContinuousSincosEmbed ----------------------------------------------------------------------
    def rope_frequency(self, name: str, seed: int, head_dim: int, input_dim: int, batched: bool = True) -> None:
        up = self.up
        torch.manual_seed(seed)
        shape = (BATCH, 24, input_dim) if batched else (24, input_dim)
        coords = torch.rand(*shape) * COORD_SCALE
        config = {"hidden_dim": head_dim, "input_dim": input_dim, "implementation": "complex"}
        rf = up.RopeFrequency(up.RopeFrequencyConfig(**config))
        freqs = rf(coords)
        self.w.add(
            {
                "name": name,
                "kind": "rope_frequency",
                "module_class": "RopeFrequency",
                "config_class": "RopeFrequencyConfig",
                "seed": seed,
                "config": config,
                "config_dump": up.RopeFrequencyConfig(**config).model_dump(),
                "padding": rf.padding,
                "ndim_padding": rf.ndim_padding,
                "sincos_padding": rf.sincos_padding,
                "n_omega": int(rf.omega.numel()),
                "freqs_complex_dtype": str(freqs.dtype).removeprefix("torch."),
                "passes": [{"name": "main", "inputs": {"coords": "coords"}, "outputs": {"freqs": "freqs"}}],
            },
            {"coords": coords, "freqs": real_freqs(freqs), "omega": rf.omega},
        )

    def sincos(self, name: str, seed: int, hidden_dim: int, input_dim: int, batched: bool = True) -> None:
        up = self.up
        torch.manual_seed(seed)
        shape = (BATCH, 24, input_dim) if batched else (24, input_dim)
        coords = torch.rand(*shape) * COORD_SCALE
        config = {"hidden_dim": hidden_dim, "input_dim": input_dim}
        emb_mod = up.ContinuousSincosEmbed(up.ContinuousSincosEmbeddingConfig(**config))
        emb = emb_mod(coords)
        self.w.add(
            {
                "name": name,
                "kind": "sincos_embed",
                "module_class": "ContinuousSincosEmbed",
                "config_class": "ContinuousSincosEmbeddingConfig",
                "seed": seed,
                "config": config,
                "config_dump": up.ContinuousSincosEmbeddingConfig(**config).model_dump(),
                "padding": emb_mod.padding,
                "ndim_padding": emb_mod.ndim_padding,
                "sincos_padding": emb_mod.sincos_padding,
                "buffers": sorted(k for k, _ in emb_mod.named_buffers()),
                "passes": [{"name": "main", "inputs": {"coords": "coords"}, "outputs": {"embedding": "embedding"}}],
            },
            {"coords": coords, "embedding": emb, "omega": emb_mod.omega},
        )


# ----------------------------------------------------------------------------------------------------------------
# init modes
# ----------------------------------------------------------------------------------------------------------------
def init_modes(up: Upstream, writer: FixtureWriter) -> dict[str, Any]:
    """Which ``init_weights`` values upstream's DotProductAttention accepts (and the exact exceptions otherwise).

    As an extra, the freshly initialised state dicts (seed 0, hidden_dim 32, num_heads 4) of the accepting modes are
    stored in ``init_modes.safetensors`` under ``<mode>.state_dict.<key>`` so that RNG-order compatibility can be
    checked if desired.
    """
    import typing

    literal_modes = list(typing.get_args(up.InitWeightsMode))
    result: dict[str, Any] = {
        "module_class": "DotProductAttention",
        "init_weights_literal": literal_modes,
        "default": up.AttentionConfig.model_fields["init_weights"].default,
        "modes": {},
        "seed": 0,
        "config": {"hidden_dim": 32, "num_heads": 4},
    }
    tensors: dict[str, torch.Tensor] = {}
    for mode in [*literal_modes, "kaiming", "zero"]:
        entry: dict[str, Any] = {"in_literal": mode in literal_modes}
        try:
            cfg = up.DotProductAttentionConfig(hidden_dim=32, num_heads=4, init_weights=mode)
        except Exception as exc:
            entry.update(raises=True, stage="config", exc_type=type(exc).__name__, message=str(exc))
            entry["pydantic_msg"] = exc.errors()[0]["msg"] if hasattr(exc, "errors") else None
            result["modes"][mode] = entry
            continue
        torch.manual_seed(0)
        try:
            module = up.DotProductAttention(cfg)
        except Exception as exc:
            entry.update(raises=True, stage="module", exc_type=type(exc).__name__, message=str(exc))
            result["modes"][mode] = entry
            continue
        entry["raises"] = False
        sd = module.state_dict()
        entry["bias_all_zero"] = bool(all((v == 0).all() for k, v in sd.items() if k.endswith("bias")))
        entry["proj_weight_all_zero"] = bool((sd["proj.weight"] == 0).all())
        entry["weight_std"] = {k: float(v.std()) for k, v in sd.items() if k.endswith("weight")}
        tensors.update(state_dict_tensors(module, prefix=f"{mode}.state_dict."))
        result["modes"][mode] = entry
    result["raising_modes"] = {m: e["exc_type"] for m, e in result["modes"].items() if e["raises"]}
    result["file"] = "init_modes.safetensors"
    result["tensors"] = tensor_info(tensors)
    writer.files["init_modes"] = tensors
    return result


# ----------------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------------
class ErrorRecorder:
    """Runs declarative error cases against upstream and records the exception type and message."""

    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.errors: list[dict[str, Any]] = []

    def _record(self, name: str, description: str, spec: dict[str, Any], fn: Callable[[], Any]) -> None:
        entry: dict[str, Any] = {"name": name, "description": description, **spec}
        try:
            fn()
        except Exception as exc:
            entry["raises"] = True
            entry["exc_type"] = type(exc).__name__
            entry["exc_mro"] = [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)]
            entry["message"] = str(exc)
            if hasattr(exc, "errors") and callable(exc.errors):
                entry["pydantic_errors"] = [
                    {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()
                ]
        else:
            entry["raises"] = False
        self.errors.append(entry)

    def module_call(
        self,
        name: str,
        description: str,
        module_class: str = "MixedAttention",
        config: dict[str, Any] | None = None,
        token_specs: Specs | None = None,
        attention_patterns: Patterns | None = None,
        x_tokens: int | None = None,
        key_padding_mask: dict[str, Any] | None = None,
        freqs_tokens: int | None = None,
        kv_cache: dict[str, int] | None = None,
    ) -> None:
        """``kv_cache`` maps token name -> number of cached tokens (``{}`` means an empty dict)."""
        up = self.up
        config = config or {"hidden_dim": 32, "num_heads": 2}
        token_specs = token_specs or []
        n = x_tokens if x_tokens is not None else sum(s for _, s in token_specs if s is not None)
        spec: dict[str, Any] = {
            "kind": "forward",
            "module_class": module_class,
            "config": config,
            "token_specs": specs_json(token_specs),
            "attention_patterns": patterns_json(attention_patterns) if attention_patterns is not None else None,
            "x_shape": [BATCH, n, config["hidden_dim"]],
            "key_padding_mask": key_padding_mask,
            "freqs_shape": None,
            "kv_cache": kv_cache,
        }
        head_dim = config["hidden_dim"] // config["num_heads"]
        if freqs_tokens is not None:
            spec["freqs_shape"] = [BATCH, freqs_tokens, head_dim // 2]

        def fn() -> Any:
            torch.manual_seed(0)
            cfg_cls = {
                "MixedAttention": up.MixedAttentionConfig,
                "SelfAnchorAttention": up.MultiBranchAnchorAttentionConfig,
                "CrossAnchorAttention": up.CrossAnchorAttentionConfig,
                "JointAnchorAttention": up.JointAnchorAttentionConfig,
            }[module_class]
            module = getattr(up, module_class)(cfg_cls(**config))
            module.eval()
            x = torch.randn(BATCH, n, config["hidden_dim"])
            ts = [up.TokenSpec(name=a, size=b) for a, b in token_specs]
            kpm = None
            if key_padding_mask is not None:
                kpm = torch.ones(key_padding_mask["shape"], dtype=getattr(torch, key_padding_mask["dtype"]))
            freqs = None
            if freqs_tokens is not None:
                freqs = torch.polar(
                    torch.ones(BATCH, freqs_tokens, head_dim // 2), torch.rand(BATCH, freqs_tokens, head_dim // 2)
                )
            cache = None
            if kv_cache is not None:
                cache = {
                    k: {
                        "k": torch.randn(BATCH, config["num_heads"], s, head_dim),
                        "v": torch.randn(BATCH, config["num_heads"], s, head_dim),
                    }
                    for k, s in kv_cache.items()
                }
            with torch.no_grad():
                if module_class == "MixedAttention":
                    ps = [
                        up.AttentionPattern(query_tokens=q, key_value_tokens=kv) for q, kv in attention_patterns or []
                    ]
                    return module(x, ts, ps, key_padding_mask=kpm, freqs=freqs, kv_cache=cache)
                return module(x, ts, key_padding_mask=kpm, freqs=freqs, kv_cache=cache)

        self._record(name, description, spec, fn)

    def construct(
        self, name: str, description: str, target: str, kwargs: dict[str, Any], fn: Callable[[], Any]
    ) -> None:
        self._record(name, description, {"kind": "construct", "target": target, "kwargs": kwargs}, fn)


def record_errors(up: Upstream) -> list[dict[str, Any]]:
    r = ErrorRecorder(up)
    four: Specs = [("surface_anchors", 4), ("surface_queries", 3), ("volume_anchors", 4), ("volume_queries", 3)]
    ok_patterns: Patterns = [
        (["surface_anchors", "surface_queries"], ["surface_anchors"]),
        (["volume_anchors", "volume_queries"], ["volume_anchors"]),
    ]
    cached_specs: Specs = [
        ("surface_anchors", None),
        ("surface_queries", 3),
        ("volume_anchors", None),
        ("volume_queries", 3),
    ]
    rope_cfg = {"hidden_dim": 32, "num_heads": 2, "use_rope": True}

    # -- MixedAttention pattern validation
    r.module_call(
        "duplicate_query",
        "a group is a query in two patterns",
        token_specs=four,
        attention_patterns=[
            (["surface_anchors", "surface_queries"], ["surface_anchors"]),
            (["volume_anchors", "volume_queries", "surface_queries"], ["volume_anchors"]),
        ],
    )
    r.module_call(
        "group_in_no_pattern",
        "a group (volume_queries) is a query in no pattern",
        token_specs=four,
        attention_patterns=[
            (["surface_anchors", "surface_queries"], ["surface_anchors"]),
            (["volume_anchors"], ["volume_anchors"]),
        ],
    )
    r.module_call(
        "unknown_query_token",
        "a pattern names a query group that is not in token_specs",
        token_specs=four,
        attention_patterns=[*ok_patterns, (["ghost"], ["surface_anchors"])],
    )
    r.module_call(
        "unknown_key_value_token",
        "a pattern names a key/value group that is not in token_specs",
        token_specs=four,
        attention_patterns=[
            (["surface_anchors", "surface_queries"], ["surface_anchors", "ghost_anchors"]),
            (["volume_anchors", "volume_queries"], ["volume_anchors"]),
        ],
    )
    r.module_call(
        "size_mismatch",
        "token specs total size (14) != x.shape[1] (15)",
        token_specs=four,
        attention_patterns=ok_patterns,
        x_tokens=15,
    )
    r.module_call(
        "rope_mismatch_freqs_without_rope",
        "use_rope=False but freqs given",
        token_specs=four,
        attention_patterns=ok_patterns,
        freqs_tokens=14,
    )
    r.module_call(
        "rope_mismatch_rope_without_freqs",
        "use_rope=True but freqs=None",
        config=rope_cfg,
        token_specs=four,
        attention_patterns=ok_patterns,
    )
    r.module_call(
        "kpm_wrong_dtype_uint8",
        "key_padding_mask with dtype uint8",
        token_specs=four,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "uint8", "shape": [BATCH, 14]},
    )
    r.module_call(
        "kpm_wrong_dtype_float",
        "key_padding_mask with dtype float32",
        token_specs=four,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "float32", "shape": [BATCH, 14]},
    )
    r.module_call(
        "kpm_wrong_ndim",
        "key_padding_mask of shape (batch, 1, n_tokens)",
        token_specs=four,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 1, 14]},
    )
    r.module_call(
        "kpm_wrong_length",
        "key_padding_mask of shape (batch, n_tokens + 1)",
        token_specs=four,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 15]},
    )
    r.module_call(
        "kpm_with_kv_cache",
        "key_padding_mask (valid for x) together with cached groups and a complete kv_cache",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 6]},
        kv_cache={"surface_anchors": 4, "volume_anchors": 4},
    )
    r.module_call(
        "cached_token_missing",
        "volume_anchors has size None but kv_cache only holds surface_anchors",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        kv_cache={"surface_anchors": 4},
    )
    r.module_call(
        "kv_cache_empty_dict",
        "cached groups but kv_cache={}",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        kv_cache={},
    )
    r.module_call(
        "kv_cache_none",
        "cached groups but kv_cache=None",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        kv_cache=None,
    )
    r.module_call(
        "cached_group_not_a_query",
        "cached groups must still appear as queries in some pattern (they are filtered out afterwards)",
        token_specs=cached_specs,
        attention_patterns=[
            (["surface_queries"], ["surface_anchors"]),
            (["volume_queries"], ["volume_anchors"]),
        ],
        kv_cache={"surface_anchors": 4, "volume_anchors": 4},
    )
    r.module_call(
        "cached_ok_control",
        "control: same as cached_group_not_a_query but with the cached groups listed as queries (no error)",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        kv_cache={"surface_anchors": 4, "volume_anchors": 4},
    )
    # -- ordering of checks
    r.module_call(
        "order_rope_before_kpm",
        "ordering: rope mismatch and wrong kpm dtype -> rope error first",
        token_specs=four,
        attention_patterns=ok_patterns,
        freqs_tokens=14,
        key_padding_mask={"dtype": "uint8", "shape": [BATCH, 14]},
    )
    r.module_call(
        "order_kpm_dtype_before_ndim",
        "ordering: wrong kpm dtype and ndim -> dtype error first",
        token_specs=four,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "uint8", "shape": [BATCH, 1, 14]},
    )
    r.module_call(
        "order_kpm_length_before_size",
        "ordering: kpm length != x tokens and specs size != x tokens -> kpm error first",
        token_specs=four,
        attention_patterns=ok_patterns,
        x_tokens=15,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 14]},
    )
    r.module_call(
        "order_size_before_patterns",
        "ordering: size mismatch and a duplicate query -> size error first",
        token_specs=four,
        attention_patterns=[*ok_patterns, (["surface_queries"], ["surface_anchors"])],
        x_tokens=15,
    )
    r.module_call(
        "order_duplicate_before_coverage",
        "ordering: duplicate query and a missing group -> duplicate error first",
        token_specs=four,
        attention_patterns=[
            (["surface_anchors", "surface_queries"], ["surface_anchors"]),
            (["surface_queries", "volume_anchors"], ["volume_anchors"]),
        ],
    )
    r.module_call(
        "order_patterns_before_empty_cache",
        "ordering: pattern validation runs before the empty-kv_cache check",
        token_specs=cached_specs,
        attention_patterns=[(["surface_anchors", "surface_queries"], ["surface_anchors"])],
        kv_cache={},
    )
    r.module_call(
        "order_empty_cache_before_kpm",
        "ordering: kpm with cached groups and an empty kv_cache -> empty-cache error",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 6]},
        kv_cache={},
    )
    r.module_call(
        "order_missing_cached_before_kpm",
        "ordering: kpm with cached groups and a kv_cache missing one group -> missing-group error",
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 6]},
        kv_cache={"surface_anchors": 4},
    )
    r.module_call(
        "order_rope_cached",
        "ordering: use_rope=True without freqs on the cached path -> rope error (validation precedes cache checks)",
        config=rope_cfg,
        token_specs=cached_specs,
        attention_patterns=ok_patterns,
        kv_cache={},
    )
    # -- multi-branch
    branches = {"hidden_dim": 32, "num_heads": 2, "branches": ["surface", "volume"]}
    r.module_call(
        "mb_unexpected_token",
        "SelfAnchorAttention: token 'pressure_queries' does not start with any branch",
        module_class="SelfAnchorAttention",
        config=branches,
        token_specs=[*four, ("pressure_queries", 2)],
    )
    r.module_call(
        "mb_missing_branch",
        "SelfAnchorAttention: no token of branch 'volume'",
        module_class="SelfAnchorAttention",
        config=branches,
        token_specs=four[:2],
    )
    r.module_call(
        "mb_missing_anchor",
        "SelfAnchorAttention: branch 'volume' present but without 'volume_anchors'",
        module_class="SelfAnchorAttention",
        config=branches,
        token_specs=[*four[:2], ("volume_queries", 3)],
    )
    r.module_call(
        "mb_order_unexpected_before_missing",
        "ordering: unexpected token and missing anchor -> unexpected-token error first",
        module_class="SelfAnchorAttention",
        config=branches,
        token_specs=[("pressure_queries", 2), *four[:2], ("volume_queries", 3)],
    )
    r.module_call(
        "mb_cross_missing_anchor",
        "CrossAnchorAttention: branch 'volume' has no anchors",
        module_class="CrossAnchorAttention",
        config=branches,
        token_specs=[*four[:2], ("volume_queries", 3)],
    )
    r.module_call(
        "mb_joint_missing_branch",
        "JointAnchorAttention: no token of branch 'surface'",
        module_class="JointAnchorAttention",
        config=branches,
        token_specs=four[2:],
    )
    r.module_call(
        "mb_prefix_overlap",
        "SelfAnchorAttention with branches ['vol', 'volume']: volume tokens match both prefixes and end up as "
        "queries in two patterns",
        module_class="SelfAnchorAttention",
        config={"hidden_dim": 32, "num_heads": 2, "branches": ["vol", "volume"]},
        token_specs=[("vol_anchors", 2), ("volume_anchors", 3), ("volume_queries", 2)],
    )
    r.module_call(
        "mb_kpm_with_cache",
        "SelfAnchorAttention query pass with key_padding_mask -> MixedAttention's kv-cache error",
        module_class="SelfAnchorAttention",
        config=branches,
        token_specs=cached_specs,
        key_padding_mask={"dtype": "bool", "shape": [BATCH, 6]},
        kv_cache={"surface_anchors": 4, "volume_anchors": 4},
    )
    r.construct(
        "mb_cross_one_branch",
        "CrossAnchorAttention with a single branch",
        "CrossAnchorAttention(CrossAnchorAttentionConfig(**kwargs))",
        {"hidden_dim": 32, "num_heads": 2, "branches": ["surface"]},
        lambda: up.CrossAnchorAttention(
            up.CrossAnchorAttentionConfig(hidden_dim=32, num_heads=2, branches=["surface"])
        ),
    )
    r.construct(
        "mb_joint_one_branch",
        "JointAnchorAttention with a single branch",
        "JointAnchorAttention(JointAnchorAttentionConfig(**kwargs))",
        {"hidden_dim": 32, "num_heads": 2, "branches": ["surface"]},
        lambda: up.JointAnchorAttention(
            up.JointAnchorAttentionConfig(hidden_dim=32, num_heads=2, branches=["surface"])
        ),
    )
    r.construct(
        "mb_self_one_branch_ok",
        "control: SelfAnchorAttention accepts a single branch",
        "SelfAnchorAttention(MultiBranchAnchorAttentionConfig(**kwargs))",
        {"hidden_dim": 32, "num_heads": 2, "branches": ["surface"]},
        lambda: up.SelfAnchorAttention(
            up.MultiBranchAnchorAttentionConfig(hidden_dim=32, num_heads=2, branches=["surface"])
        ),
    )
    r.construct(
        "mb_empty_branches",
        "MultiBranchAnchorAttentionConfig with branches=[] (pydantic min_length=1)",
        "MultiBranchAnchorAttentionConfig(**kwargs)",
        {"hidden_dim": 32, "num_heads": 2, "branches": []},
        lambda: up.MultiBranchAnchorAttentionConfig(hidden_dim=32, num_heads=2, branches=[]),
    )
    r.construct(
        "mb_cross_one_branch_plain_config",
        "CrossAnchorAttention given a plain AttentionConfig with an extra 'branches' field of length 1",
        "CrossAnchorAttention(AttentionConfig(**kwargs))",
        {"hidden_dim": 32, "num_heads": 2, "branches": ["surface"]},
        lambda: up.CrossAnchorAttention(up.AttentionConfig(hidden_dim=32, num_heads=2, branches=["surface"])),
    )
    # -- schema errors
    r.construct(
        "token_spec_from_dict_two_keys",
        "TokenSpec.from_dict with two keys",
        "TokenSpec.from_dict(kwargs['token_dict'])",
        {"token_dict": {"a": 1, "b": 2}},
        lambda: up.TokenSpec.from_dict({"a": 1, "b": 2}),
    )
    r.construct(
        "token_spec_from_dict_empty",
        "TokenSpec.from_dict with an empty dict",
        "TokenSpec.from_dict(kwargs['token_dict'])",
        {"token_dict": {}},
        lambda: up.TokenSpec.from_dict({}),
    )
    r.construct(
        "token_spec_negative_size",
        "TokenSpec with size=-1 (pydantic ge=0)",
        "TokenSpec(**kwargs)",
        {"name": "a", "size": -1},
        lambda: up.TokenSpec(name="a", size=-1),
    )
    r.construct(
        "token_spec_missing_size",
        "TokenSpec without size (size is required, None must be explicit)",
        "TokenSpec(**kwargs)",
        {"name": "a"},
        lambda: up.TokenSpec(name="a"),
    )
    r.construct(
        "token_spec_positional",
        "TokenSpec('a', 3) with positional arguments (as in upstream's MixedAttention docstring)",
        "TokenSpec(*kwargs['args'])",
        {"args": ["a", 3]},
        lambda: up.TokenSpec("a", 3),
    )
    r.construct(
        "attention_config_not_divisible",
        "AttentionConfig(hidden_dim=30, num_heads=4): pydantic model validator error",
        "AttentionConfig(**kwargs)",
        {"hidden_dim": 30, "num_heads": 4},
        lambda: up.AttentionConfig(hidden_dim=30, num_heads=4),
    )
    r.construct(
        "mixed_config_not_divisible",
        "MixedAttentionConfig(hidden_dim=30, num_heads=4)",
        "MixedAttentionConfig(**kwargs)",
        {"hidden_dim": 30, "num_heads": 4},
        lambda: up.MixedAttentionConfig(hidden_dim=30, num_heads=4),
    )
    r.construct(
        "attention_config_zero_heads",
        "AttentionConfig(hidden_dim=32, num_heads=0) (pydantic ge=1)",
        "AttentionConfig(**kwargs)",
        {"hidden_dim": 32, "num_heads": 0},
        lambda: up.AttentionConfig(hidden_dim=32, num_heads=0),
    )
    r.construct(
        "attention_config_dropout_gt_1",
        "AttentionConfig(dropout=1.5) (pydantic le=1)",
        "AttentionConfig(**kwargs)",
        {"hidden_dim": 32, "num_heads": 2, "dropout": 1.5},
        lambda: up.AttentionConfig(hidden_dim=32, num_heads=2, dropout=1.5),
    )
    r.construct(
        "rope_frequency_effective_dim_zero",
        "RopeFrequency(hidden_dim=2, input_dim=3): effective dim per wave is 0",
        "RopeFrequency(RopeFrequencyConfig(**kwargs))",
        {"hidden_dim": 2, "input_dim": 3, "implementation": "complex"},
        lambda: up.RopeFrequency(up.RopeFrequencyConfig(hidden_dim=2, input_dim=3, implementation="complex")),
    )
    r.construct(
        "rope_frequency_odd_padding",
        "RopeFrequency(hidden_dim=9, input_dim=2) complex: padding 1 is odd -> assertion in forward",
        "RopeFrequency(RopeFrequencyConfig(**kwargs))(torch.rand(2, 5, 2))",
        {"hidden_dim": 9, "input_dim": 2, "implementation": "complex"},
        lambda: up.RopeFrequency(up.RopeFrequencyConfig(hidden_dim=9, input_dim=2, implementation="complex"))(
            torch.rand(2, 5, 2)
        ),
    )
    r.construct(
        "rope_frequency_wrong_coord_dim",
        "RopeFrequency(input_dim=3) on 2-d coords -> bare assert",
        "RopeFrequency(RopeFrequencyConfig(**kwargs))(torch.rand(2, 5, 2))",
        {"hidden_dim": 12, "input_dim": 3, "implementation": "complex"},
        lambda: up.RopeFrequency(up.RopeFrequencyConfig(hidden_dim=12, input_dim=3, implementation="complex"))(
            torch.rand(2, 5, 2)
        ),
    )
    r.construct(
        "sincos_4d_coords",
        "ContinuousSincosEmbed on 4-d coords tensor -> NotImplementedError",
        "ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(**kwargs))(torch.rand(2, 2, 5, 3))",
        {"hidden_dim": 48, "input_dim": 3},
        lambda: up.ContinuousSincosEmbed(up.ContinuousSincosEmbeddingConfig(hidden_dim=48, input_dim=3))(
            torch.rand(2, 2, 5, 3)
        ),
    )
    r.construct(
        "dot_product_freqs_without_rope",
        "DotProductAttention(use_rope=False) called with freqs -> bare assert",
        "DotProductAttention(DotProductAttentionConfig(**kwargs))(torch.randn(2, 5, 32), freqs=<complex (2, 5, 8)>)",
        {"hidden_dim": 32, "num_heads": 2},
        lambda: up.DotProductAttention(up.DotProductAttentionConfig(hidden_dim=32, num_heads=2))(
            torch.randn(2, 5, 32), freqs=torch.polar(torch.ones(2, 5, 8), torch.rand(2, 5, 8))
        ),
    )
    r.construct(
        "dot_product_rope_without_freqs",
        "DotProductAttention(use_rope=True) called without freqs -> bare assert",
        "DotProductAttention(DotProductAttentionConfig(**kwargs))(torch.randn(2, 5, 32))",
        {"hidden_dim": 32, "num_heads": 2, "use_rope": True},
        lambda: up.DotProductAttention(up.DotProductAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True))(
            torch.randn(2, 5, 32)
        ),
    )
    # -- PerceiverAttention
    perceiver = "PerceiverAttention(PerceiverAttentionConfig(**kwargs))"
    polar = lambda *shape: torch.polar(torch.ones(shape), torch.rand(shape))  # noqa: E731
    r.construct(
        "perceiver_no_kv_no_cache",
        "PerceiverAttention called with neither kv nor kv_cache",
        f"{perceiver}(torch.randn(2, 5, 32))",
        {"hidden_dim": 32, "num_heads": 2},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2))(torch.randn(2, 5, 32)),
    )
    r.construct(
        "perceiver_rope_without_k_freqs",
        "PerceiverAttention(use_rope=True) with q_freqs but without k_freqs -> bare assert",
        f"{perceiver}(torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=<complex (2, 5, 8)>)",
        {"hidden_dim": 32, "num_heads": 2, "use_rope": True},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True))(
            torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=polar(2, 5, 8)
        ),
    )
    r.construct(
        "perceiver_rope_without_q_freqs",
        "PerceiverAttention(use_rope=True) with k_freqs but without q_freqs -> bare assert",
        f"{perceiver}(torch.randn(2, 5, 32), torch.randn(2, 7, 32), k_freqs=<complex (2, 7, 8)>)",
        {"hidden_dim": 32, "num_heads": 2, "use_rope": True},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True))(
            torch.randn(2, 5, 32), torch.randn(2, 7, 32), k_freqs=polar(2, 7, 8)
        ),
    )
    r.construct(
        "perceiver_cached_rope_without_q_freqs",
        "PerceiverAttention(use_rope=True) on a cached pass without q_freqs -> bare assert",
        f"{perceiver}(torch.randn(2, 5, 32), kv_cache=<k, v (2, 2, 7, 16)>)",
        {"hidden_dim": 32, "num_heads": 2, "use_rope": True},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True))(
            torch.randn(2, 5, 32), kv_cache={"k": torch.randn(2, 2, 7, 16), "v": torch.randn(2, 2, 7, 16)}
        ),
    )
    r.construct(
        "perceiver_no_kv_rope_order",
        "ordering: use_rope=True, no kv, no cache, no freqs -> the missing-kv error first",
        f"{perceiver}(torch.randn(2, 5, 32))",
        {"hidden_dim": 32, "num_heads": 2, "use_rope": True},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True))(
            torch.randn(2, 5, 32)
        ),
    )
    r.construct(
        "perceiver_kv_width_mismatch",
        "kv with 24 features while kv_dim = hidden_dim = 32 -> the projection's shape error",
        f"{perceiver}(torch.randn(2, 5, 32), torch.randn(2, 7, 24))",
        {"hidden_dim": 32, "num_heads": 2},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2))(
            torch.randn(2, 5, 32), torch.randn(2, 7, 24)
        ),
    )
    r.construct(
        "perceiver_freqs_without_rope_ok",
        "control: use_rope=False ignores q_freqs/k_freqs (no error)",
        f"{perceiver}(torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=<complex (2, 5, 8)>, "
        "k_freqs=<complex (2, 7, 8)>)",
        {"hidden_dim": 32, "num_heads": 2},
        lambda: up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2))(
            torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=polar(2, 5, 8), k_freqs=polar(2, 7, 8)
        ),
    )
    r.construct(
        "perceiver_plain_attention_config_ok",
        "control: PerceiverAttention accepts a plain AttentionConfig carrying kv_dim as an extra field",
        "PerceiverAttention(AttentionConfig(**kwargs))(torch.randn(2, 5, 32), torch.randn(2, 7, 24))",
        {"hidden_dim": 32, "num_heads": 2, "kv_dim": 24},
        lambda: up.PerceiverAttention(up.AttentionConfig(hidden_dim=32, num_heads=2, kv_dim=24))(
            torch.randn(2, 5, 32), torch.randn(2, 7, 24)
        ),
    )
    return r.errors


# ----------------------------------------------------------------------------------------------------------------
# observations (behaviour probes recorded as data)
# ----------------------------------------------------------------------------------------------------------------
def observations(up: Upstream) -> dict[str, Any]:
    obs: dict[str, Any] = {}
    # extra config fields on multi-branch / mixed attention
    torch.manual_seed(0)
    cfg = up.MultiBranchAnchorAttentionConfig(
        hidden_dim=32, num_heads=2, branches=["surface", "volume"], qk_norm=True, some_unknown_field=123
    )
    m = up.SelfAnchorAttention(cfg)
    obs["multi_branch_extra_fields"] = {
        "config_kwargs": {"qk_norm": True, "some_unknown_field": 123},
        "accepted": True,
        "config_dump_keeps_extra": {k: cfg.model_dump().get(k) for k in ("qk_norm", "some_unknown_field")},
        "state_dict_keys": list(m.state_dict().keys()),
        "inner_mixed_config_has_extra": hasattr(m.mixed_attention, "qk_norm"),
        "note": "MultiBranchAnchorAttention rebuilds a MixedAttentionConfig from hidden_dim, num_heads, use_rope, "
        "bias, init_weights, dropout only; every other field (qk_norm, ...) is silently dropped.",
    }
    torch.manual_seed(0)
    mcfg = up.MixedAttentionConfig(hidden_dim=32, num_heads=2, qk_norm=True)
    mm = up.MixedAttention(mcfg)
    obs["mixed_extra_fields"] = {
        "config_kwargs": {"qk_norm": True},
        "accepted": True,
        "state_dict_keys": list(mm.state_dict().keys()),
    }
    torch.manual_seed(0)
    mnb = up.MixedAttention(up.MixedAttentionConfig(hidden_dim=32, num_heads=2, bias=False))
    obs["mixed_bias_false_state_dict_keys"] = list(mnb.state_dict().keys())
    obs["mixed_state_dict_keys"] = list(mm.state_dict().keys())
    obs["multi_branch_state_dict_keys"] = list(m.state_dict().keys())
    obs["config_defaults"] = {
        k: (v.default if not v.is_required() else "<required>") for k, v in up.AttentionConfig.model_fields.items()
    }
    obs["multi_branch_config_defaults"] = {
        k: (v.default if not v.is_required() else "<required>")
        for k, v in up.MultiBranchAnchorAttentionConfig.model_fields.items()
    }
    obs["attention_config_dump_example"] = up.AttentionConfig(hidden_dim=32, num_heads=4).model_dump()
    obs["rope_frequency_config_defaults"] = {
        k: (v.default if not v.is_required() else "<required>") for k, v in up.RopeFrequencyConfig.model_fields.items()
    }
    obs["sincos_config_defaults"] = {
        k: (v.default if not v.is_required() else "<required>")
        for k, v in up.ContinuousSincosEmbeddingConfig.model_fields.items()
    }
    obs["token_spec_dump"] = up.TokenSpec(name="surface_anchors", size=3).model_dump()
    obs["token_spec_none_dump"] = up.TokenSpec(name="surface_anchors", size=None).model_dump()
    obs["token_spec_from_dict"] = up.TokenSpec.from_dict({"volume_queries": 5}).model_dump()
    obs["token_spec_to_dict"] = up.TokenSpec(name="volume_queries", size=5).to_dict()
    try:
        ap = up.AttentionPattern(query_tokens="ab", key_value_tokens=["a"])
        obs["attention_pattern_str_query_tokens"] = {"accepted": True, "query_tokens": repr(ap.query_tokens)}
    except Exception as exc:
        obs["attention_pattern_str_query_tokens"] = {"accepted": False, "exc_type": type(exc).__name__}
    ap = up.AttentionPattern(query_tokens=("a", "b"), key_value_tokens=["a"])
    obs["attention_pattern_tuple_kept_as"] = type(ap.query_tokens).__name__

    # new_kv_cache naming rule: substring "_anchor" regardless of anchor_suffix
    torch.manual_seed(0)
    mx = up.MixedAttention(up.MixedAttentionConfig(hidden_dim=32, num_heads=2)).eval()
    names = ["anchors", "surface_anchorage", "volume_anchor", "points_anchors_x", "queries"]
    ts = [up.TokenSpec(name=n, size=2) for n in names]
    ps = [up.AttentionPattern(query_tokens=names, key_value_tokens=names)]
    with torch.no_grad():
        _, cache = mx(torch.randn(BATCH, 10, 32), ts, ps)
    obs["new_kv_cache_naming"] = {
        "token_names": names,
        "cached_names": list(cache.keys()),
        "note": "new_kv_cache holds every input group whose name contains the substring '_anchor'; "
        "it is {} (not None) on the normal path when no name matches, and None on the cached path.",
    }
    torch.manual_seed(0)
    sa = up.SelfAnchorAttention(
        up.MultiBranchAnchorAttentionConfig(hidden_dim=32, num_heads=2, branches=["a", "b"], anchor_suffix="_ctx")
    ).eval()
    ts = [up.TokenSpec(name=n, size=2) for n in ["a_ctx", "a_q", "b_ctx", "b_q"]]
    with torch.no_grad():
        _, cache = sa(torch.randn(BATCH, 8, 32), ts)
    obs["multi_branch_custom_anchor_suffix_cache"] = {
        "anchor_suffix": "_ctx",
        "token_names": ["a_ctx", "a_q", "b_ctx", "b_q"],
        "new_kv_cache": cache if cache is None else list(cache.keys()),
    }
    # zero-size group
    torch.manual_seed(0)
    try:
        mx = up.MixedAttention(up.MixedAttentionConfig(hidden_dim=32, num_heads=2)).eval()
        ts = [up.TokenSpec(name=n, size=s) for n, s in [("x_anchors", 3), ("x_queries", 0)]]
        ps = [up.AttentionPattern(query_tokens=["x_anchors", "x_queries"], key_value_tokens=["x_anchors"])]
        with torch.no_grad():
            o, _ = mx(torch.randn(BATCH, 3, 32), ts, ps)
        obs["zero_size_group"] = {"works": True, "out_shape": list(o.shape)}
    except Exception as exc:
        obs["zero_size_group"] = {"works": False, "exc_type": type(exc).__name__, "message": str(exc)}
    # dtype handling
    rf = up.RopeFrequency(up.RopeFrequencyConfig(hidden_dim=12, input_dim=3, implementation="complex"))
    emb = up.ContinuousSincosEmbed(up.ContinuousSincosEmbeddingConfig(hidden_dim=48, input_dim=3))
    c64 = torch.rand(BATCH, 4, 3, dtype=torch.float64)
    obs["dtype_handling"] = {
        "rope_frequency_float64_coords": str(rf(c64).dtype),
        "rope_frequency_int_coords": str(rf(torch.randint(0, 10, (BATCH, 4, 3))).dtype),
        "sincos_float64_coords": str(emb(c64).dtype),
        "sincos_int_coords": str(emb(torch.randint(0, 10, (BATCH, 4, 3))).dtype),
        "rope_apply_float64_x": str(up.rope(torch.randn(BATCH, 2, 4, 12, dtype=torch.float64), rf(c64)).dtype),
    }
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rf_real = up.RopeFrequency(up.RopeFrequencyConfig(hidden_dim=12, input_dim=3))
        out_real = rf_real(torch.rand(BATCH, 4, 3))
    obs["rope_frequency_default_implementation"] = {
        "implementation": rf_real.implementation,
        "warning": [str(x.message) for x in w],
        "returns": f"{type(out_real).__name__} of {len(out_real)} tensors shaped {list(out_real[0].shape)}"
        if isinstance(out_real, tuple)
        else str(type(out_real)),
    }
    try:
        up.rope(torch.randn(1, 2, 4, 12), rf(torch.rand(4, 3)))  # unbatched (seqlen, head_dim // 2) freqs
        obs["rope_unbatched_freqs"] = {"works": True}
    except AssertionError as exc:
        obs["rope_unbatched_freqs"] = {"works": False, "exc_type": "AssertionError", "message": str(exc)}
    # kv_cache handling details
    torch.manual_seed(0)
    mk = up.MixedAttention(up.MixedAttentionConfig(hidden_dim=32, num_heads=2)).eval()
    kv = {n: {"k": torch.randn(BATCH, 2, 3, 16), "v": torch.randn(BATCH, 2, 3, 16)} for n in ("context", "unused")}
    xq = torch.randn(BATCH, 4, 32)
    pats = [up.AttentionPattern(query_tokens=["context", "queries"], key_value_tokens=["context"])]
    with torch.no_grad():
        out_c, cache_c = mk(
            xq, [up.TokenSpec(name="context", size=None), up.TokenSpec(name="queries", size=4)], pats, kv_cache=kv
        )
        specs_n = [up.TokenSpec(name="a_anchors", size=2), up.TokenSpec(name="queries", size=2)]
        pats_n = [up.AttentionPattern(query_tokens=["a_anchors", "queries"], key_value_tokens=["a_anchors"])]
        out_n1, _ = mk(xq, specs_n, pats_n)
        out_n2, cache_n2 = mk(xq, specs_n, pats_n, kv_cache=kv)
    obs["kv_cache_details"] = {
        "cached_group_without_anchor_in_name_works": tuple(out_c.shape) == tuple(xq.shape),
        "cached_path_new_kv_cache": cache_c,
        "extra_kv_cache_entries_ignored": True,
        "kv_cache_ignored_without_cached_specs": bool(torch.equal(out_n1, out_n2)),
        "normal_path_with_kv_cache_still_returns_new_cache": list(cache_n2.keys()) if cache_n2 is not None else None,
        "note": "any group with size None is looked up in kv_cache by name (no '_anchor' requirement); extra "
        "kv_cache entries are ignored; a kv_cache passed without size-None specs is ignored entirely.",
    }
    # cached path applies RoPE to queries: compare against a run with identity freqs
    torch.manual_seed(0)
    mr = up.MixedAttention(up.MixedAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True)).eval()
    specs = [up.TokenSpec(name="a_anchors", size=4), up.TokenSpec(name="a_queries", size=3)]
    pats = [up.AttentionPattern(query_tokens=["a_anchors", "a_queries"], key_value_tokens=["a_anchors"])]
    xx = torch.randn(BATCH, 7, 32) * X_SCALE
    fr = Builder(up, FixtureWriter(OUT_DIR)).rope_freqs(torch.rand(BATCH, 7, 3) * COORD_SCALE, 16, 3)
    with torch.no_grad():
        full, cache = mr(xx, specs, pats, freqs=fr)
        qspecs = [up.TokenSpec(name="a_anchors", size=None), up.TokenSpec(name="a_queries", size=3)]
        q_rot, _ = mr(xx[:, 4:], qspecs, pats, freqs=fr[:, 4:], kv_cache=cache)
        q_id, _ = mr(xx[:, 4:], qspecs, pats, freqs=torch.ones_like(fr[:, 4:]), kv_cache=cache)
    obs["cached_path_rope"] = {
        "applies_rope_to_queries": not torch.allclose(q_rot, q_id),
        "cached_equals_full_pass": bool(torch.allclose(q_rot, full[:, 4:], atol=1e-5)),
        "note": "cached K in new_kv_cache are post-RoPE; on the cached path RoPE is applied to Q only, using freqs "
        "for the input (non-cached) tokens only.",
    }
    # init modes: is 'truncnormal' the same as 'truncnormal002'?
    torch.manual_seed(0)
    a = up.DotProductAttention(up.DotProductAttentionConfig(hidden_dim=32, num_heads=4, init_weights="truncnormal"))
    torch.manual_seed(0)
    b = up.DotProductAttention(up.DotProductAttentionConfig(hidden_dim=32, num_heads=4, init_weights="truncnormal002"))
    obs["truncnormal_equals_truncnormal002"] = all(
        torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict()
    )
    # DotProductAttention passes attn_mask straight to SDPA: float masks are additive
    torch.manual_seed(0)
    perceiver = up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2, kv_dim=24))
    perceiver_no_bias = up.PerceiverAttention(up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2, bias=False))
    obs["perceiver_state_dict_keys"] = list(perceiver.state_dict())
    obs["perceiver_bias_false_state_dict_keys"] = list(perceiver_no_bias.state_dict())
    obs["perceiver_k_weight_shape"] = list(perceiver.state_dict()["k.weight"].shape)
    obs["perceiver_config_dump"] = up.PerceiverAttentionConfig(hidden_dim=32, num_heads=2).model_dump()
    return obs


# ----------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------
def kpm_factory(drop: Sequence[Sequence[int]]) -> Callable[[int], torch.Tensor]:
    """Key padding mask with the given token indices set to False, per batch element."""

    def make(n: int) -> torch.Tensor:
        m = torch.ones(BATCH, n, dtype=torch.bool)
        for b, idx in enumerate(drop):
            m[b, list(idx)] = False
        return m

    return make


def build_cases(up: Upstream, writer: FixtureWriter) -> None:
    b = Builder(up, writer)
    sa, sq, va, vq = "surface_anchors", "surface_queries", "volume_anchors", "volume_queries"
    std_patterns: Patterns = [([sa, sq], [sa]), ([va, vq], [va])]
    torch_init = {"init_weights": "torch"}

    # a. MixedAttention, no RoPE
    b.mixed(
        "mixed_two_equal_patterns",
        seed=101,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        specs=[(sa, 16), (sq, 8), (va, 16), (vq, 8)],
        patterns=std_patterns,
        description="4 groups, 2 patterns of equal (query_len, kv_len) = (24, 16) -> upstream batches them together",
    )
    b.mixed(
        "mixed_three_patterns_different_shapes",
        seed=102,
        config={"hidden_dim": 48, "num_heads": 4, **torch_init},
        specs=[(sa, 12), (sq, 10), (va, 16), (vq, 6)],
        patterns=[([sa, va], [sa, va]), ([sq], [sa]), ([vq], [va, sa])],
        description="3 patterns of different shapes; queries [sa, va] are non-contiguous in x; vq attends to two "
        "groups given in non-spec order [va, sa]",
    )
    b.mixed(
        "mixed_default_init",
        seed=103,
        config={"hidden_dim": 32, "num_heads": 4},
        specs=[(sa, 10), (sq, 6), (va, 10), (vq, 6)],
        patterns=[([sa, sq], [sa, va]), ([va, vq], [va, sa])],
        description="default init_weights (truncnormal002) then SGD; cross-branch kv lists",
    )
    b.mixed(
        "mixed_no_bias",
        seed=104,
        config={"hidden_dim": 32, "num_heads": 2, "bias": False, **torch_init},
        specs=[(sa, 10), (sq, 6), (va, 10), (vq, 6)],
        patterns=std_patterns,
        description="bias=False: state dict has only weights",
    )
    b.mixed(
        "mixed_anchor_substring_cache",
        seed=105,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        specs=[("anchors", 6), ("surface_anchorage", 5), ("queries", 4)],
        patterns=[(["anchors", "surface_anchorage", "queries"], ["anchors", "surface_anchorage"])],
        description="new_kv_cache naming: only names containing '_anchor' are cached ('anchors' is not, "
        "'surface_anchorage' is)",
    )
    # b. key padding mask
    b.mixed(
        "mixed_key_padding_mask",
        seed=201,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        specs=[(sa, 12), (sq, 8), (va, 12), (vq, 8)],
        patterns=[([sa, sq], [sa]), ([va], [va, sa]), ([vq], [va])],
        key_padding_mask=kpm_factory([[0, 3, 4, 11, 14, 25, 31], [1, 2, 20, 21, 22, 23, 24, 26, 30, 39]]),
        description="bool key_padding_mask with False entries in anchors and queries, different per batch element",
    )
    # c. KV cache
    b.mixed(
        "mixed_kv_cache",
        seed=301,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        specs=[(sa, 16), (sq, 8), (va, 12), (vq, 10)],
        patterns=[([sa, sq], [sa]), ([va, vq], [va, sa])],
        query_pass=(
            [(sa, None), (sq, 6), (va, None), (vq, 9)],
            [([sa, sq], [sa]), ([va, vq], [va, sa])],
        ),
        description="anchor pass records new_kv_cache (surface_anchors, volume_anchors); query pass with anchors "
        "size None, x holding only fresh query groups, kv_cache = recorded cache",
    )
    # d. RoPE
    b.mixed(
        "mixed_rope",
        seed=401,
        config={"hidden_dim": 32, "num_heads": 2, "use_rope": True, **torch_init},
        specs=[(sa, 16), (sq, 8), (va, 16), (vq, 8)],
        patterns=std_patterns,
        rope_input_dim=3,
        description="use_rope=True, freqs = RopeFrequency(hidden_dim=head_dim=16, input_dim=3, complex)(coords) "
        "(padded freqs: padding 4)",
    )
    b.mixed(
        "mixed_rope_head12",
        seed=402,
        config={"hidden_dim": 48, "num_heads": 4, "use_rope": True, **torch_init},
        specs=[(sa, 12), (sq, 10), (va, 16), (vq, 6)],
        patterns=[([sa, va], [sa, va]), ([sq], [sa]), ([vq], [va, sa])],
        rope_input_dim=3,
        description="use_rope=True with head_dim 12 (unpadded freqs), 3 patterns of different shapes",
    )
    b.mixed(
        "mixed_rope_kv_cache",
        seed=403,
        config={"hidden_dim": 32, "num_heads": 2, "use_rope": True, **torch_init},
        specs=[(sa, 14), (sq, 8), (va, 12), (vq, 6)],
        patterns=[([sa, sq], [sa]), ([va, vq], [va])],
        rope_input_dim=3,
        query_pass=([(sa, None), (sq, 7), (va, None), (vq, 5)], [([sa, sq], [sa]), ([va, vq], [va])]),
        description="RoPE + KV cache: cached K are post-RoPE; query pass freqs cover only the query tokens in x",
    )
    b.rope_frequency("rope_freqs_in3_hd12", seed=411, head_dim=12, input_dim=3)
    b.rope_frequency("rope_freqs_in3_hd16", seed=412, head_dim=16, input_dim=3)
    b.rope_frequency("rope_freqs_in3_hd10", seed=413, head_dim=10, input_dim=3)
    b.rope_frequency("rope_freqs_in2_hd16", seed=414, head_dim=16, input_dim=2)
    b.rope_frequency("rope_freqs_in2_hd10", seed=415, head_dim=10, input_dim=2)
    b.rope_frequency("rope_freqs_in3_hd12_unbatched", seed=416, head_dim=12, input_dim=3, batched=False)
    # e. DotProductAttention
    b.dot_product(
        "dot_product_no_mask",
        seed=501,
        config={"hidden_dim": 32, "num_heads": 4, **torch_init},
        n=20,
        description="plain self-attention, no mask",
    )
    b.dot_product(
        "dot_product_bool_mask",
        seed=502,
        config={"hidden_dim": 32, "num_heads": 4, **torch_init},
        n=20,
        with_mask=True,
        description="boolean attn_mask (batch, 1, n, n), True = attend; diagonal always True",
    )
    b.dot_product(
        "dot_product_rope",
        seed=503,
        config={"hidden_dim": 48, "num_heads": 4, "use_rope": True, **torch_init},
        n=20,
        rope_input_dim=3,
        description="use_rope=True, head_dim 12, input_dim 3",
    )
    # f. multi-branch anchor attention
    mb_specs: Specs = [(sa, 12), (sq, 8), (va, 10), (vq, 6)]
    mb_query: Specs = [(sa, None), (sq, 5), (va, None), (vq, 7)]
    mb_cfg = {"hidden_dim": 32, "num_heads": 2, "branches": ["surface", "volume"], **torch_init}
    b.multi_branch(
        "self_anchor",
        seed=601,
        module_class="SelfAnchorAttention",
        config=mb_cfg,
        specs=mb_specs,
        query_specs=mb_query,
        description="SelfAnchorAttention, branches [surface, volume]; anchor pass + cached query pass",
    )
    b.multi_branch(
        "cross_anchor",
        seed=602,
        module_class="CrossAnchorAttention",
        config=mb_cfg,
        specs=mb_specs,
        query_specs=mb_query,
        description="CrossAnchorAttention, branches [surface, volume]; anchor pass + cached query pass",
    )
    b.multi_branch(
        "joint_anchor",
        seed=603,
        module_class="JointAnchorAttention",
        config=mb_cfg,
        specs=mb_specs,
        query_specs=mb_query,
        description="JointAnchorAttention, branches [surface, volume]; anchor pass + cached query pass",
    )
    b.multi_branch(
        "joint_anchor_rope_kpm",
        seed=604,
        module_class="JointAnchorAttention",
        config={"hidden_dim": 48, "num_heads": 4, "use_rope": True, "branches": ["surface", "volume"], **torch_init},
        specs=[(va, 8), (vq, 6), (sa, 10), (sq, 4)],
        key_padding_mask=kpm_factory([[0, 1, 9], [14, 15, 16]]),
        rope_input_dim=3,
        description="JointAnchorAttention with RoPE and key_padding_mask; spec order volume before surface",
    )
    b.multi_branch(
        "self_anchor_three_branches",
        seed=605,
        module_class="SelfAnchorAttention",
        config={"hidden_dim": 32, "num_heads": 4, "branches": ["surface", "volume", "wake"], **torch_init},
        specs=[(sa, 6), (sq, 4), (va, 6), (vq, 4), ("wake_anchors", 6), ("wake_queries", 4)],
        description="3 branches -> 3 equal-shape patterns batched together",
    )
    b.multi_branch(
        "cross_anchor_three_branches",
        seed=606,
        module_class="CrossAnchorAttention",
        config={"hidden_dim": 32, "num_heads": 4, "branches": ["surface", "volume", "wake"], **torch_init},
        specs=[(sa, 6), (sq, 4), (va, 5), (vq, 3), ("wake_anchors", 7), ("wake_queries", 2)],
        description="3 branches: each attends to the other two branches' anchors",
    )
    # g. ContinuousSincosEmbed
    b.sincos("sincos_hd48_in3", seed=701, hidden_dim=48, input_dim=3)
    b.sincos("sincos_hd32_in3", seed=702, hidden_dim=32, input_dim=3)
    b.sincos("sincos_hd33_in3", seed=703, hidden_dim=33, input_dim=3)
    b.sincos("sincos_hd32_in2_unbatched", seed=704, hidden_dim=32, input_dim=2, batched=False)
    # h. PerceiverAttention (AB-UPT's perceiver blocks)
    b.perceiver(
        "perceiver_plain",
        seed=801,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        n_queries=12,
        n_kv=10,
        description="queries attend to separate kv tokens; no RoPE, no mask",
    )
    b.perceiver(
        "perceiver_default_init_kv_dim",
        seed=802,
        config={"hidden_dim": 32, "num_heads": 4, "kv_dim": 24},
        n_queries=9,
        n_kv=14,
        description="default init_weights (truncnormal002) then SGD; kv_dim 24 != hidden_dim 32",
    )
    b.perceiver(
        "perceiver_no_bias",
        seed=803,
        config={"hidden_dim": 32, "num_heads": 2, "bias": False, **torch_init},
        n_queries=8,
        n_kv=11,
        description="bias=False: state dict has only weights",
    )
    b.perceiver(
        "perceiver_attn_mask",
        seed=804,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        n_queries=10,
        n_kv=12,
        with_mask=True,
        description="boolean attn_mask (batch, 1, queries, kv), True = attend; key 0 always allowed",
    )
    b.perceiver(
        "perceiver_rope",
        seed=805,
        config={"hidden_dim": 48, "num_heads": 4, "use_rope": True, **torch_init},
        n_queries=12,
        n_kv=9,
        rope_input_dim=3,
        description="use_rope=True: q_freqs and k_freqs from different coordinates, head_dim 12",
    )
    b.perceiver(
        "perceiver_rope_kv_cache",
        seed=806,
        config={"hidden_dim": 32, "num_heads": 2, "use_rope": True, **torch_init},
        n_queries=10,
        n_kv=12,
        rope_input_dim=3,
        cached_queries=7,
        description="RoPE + KV cache: pass 1 returns {k (post-RoPE), v}; pass 2 gives new queries with kv=None and "
        "kv_cache = that cache",
    )
    b.perceiver(
        "perceiver_kv_cache",
        seed=807,
        config={"hidden_dim": 32, "num_heads": 2, **torch_init},
        n_queries=6,
        n_kv=8,
        cached_queries=5,
        description="KV cache without RoPE",
    )


def verify(out_dir: Path) -> None:
    """Re-load every file and check that the shapes match ``cases.json``."""
    doc = json.loads((out_dir / "cases.json").read_text())
    entries = [*doc["cases"], doc["init_modes"]]
    for entry in entries:
        tensors = load_file(str(out_dir / entry["file"]))
        assert set(tensors) == set(entry["tensors"]), entry["file"]
        for key, info in entry["tensors"].items():
            assert list(tensors[key].shape) == info["shape"], (entry["file"], key)
            assert str(tensors[key].dtype).removeprefix("torch.") == info["dtype"], (entry["file"], key)
        for p in entry.get("passes", []):
            for ref in [*p["inputs"].values(), *p["outputs"].values()]:
                if ref is not None and not ref.startswith("new_kv_cache"):
                    assert ref in tensors, (entry["file"], ref)
            if "x" in p["inputs"]:
                x = tensors[p["inputs"]["x"]]
                assert tensors[p["outputs"]["out"]].shape == x.shape
                if "token_specs" in p:
                    assert x.shape[1] == sum(s["size"] for s in p["token_specs"] if s["size"] is not None)
                mask = p["inputs"].get("key_padding_mask")
                if mask:
                    assert tensors[mask].dtype == torch.bool and tensors[mask].shape == x.shape[:2]
            cache_refs = p.get("new_kv_cache_tensors", {})
            # MixedAttention caches per group ({group: {"k", "v"}}); PerceiverAttention caches one {"k", "v"}.
            for names in [cache_refs] if set(cache_refs) == {"k", "v"} else cache_refs.values():
                assert names["k"] in tensors and names["v"] in tensors
        if entry.get("kind") == "module":
            assert any(k.startswith("state_dict.") for k in tensors), entry["file"]
            biases = [v for k, v in tensors.items() if k.startswith("state_dict.") and k.endswith("bias")]
            assert all(v.abs().sum() > 0 for v in biases), f"{entry['file']}: a bias is still zero"
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    assert total < 2 * 1024 * 1024, total
    print(f"verified {len(entries)} files, {total} bytes in {out_dir}")


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    up = load_upstream()
    writer = FixtureWriter(OUT_DIR)
    build_cases(up, writer)
    init = init_modes(up, writer)
    errors = record_errors(up)
    obs = observations(up)
    extra = {
        "upstream": {
            "package": "emmiai-noether",
            "version": importlib.metadata.version("emmiai-noether"),
            "modules": up.module_files,
        },
        "generator": {
            "script": "scripts/make_upstream_fixtures.py",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "batch": BATCH,
            "sgd": {"steps": SGD_STEPS, "lr": SGD_LR, "loss": "mse vs torch.randn target"},
            "x_scale": X_SCALE,
            "coord_scale": COORD_SCALE,
            "dtype": "float32",
        },
        "conventions": {
            "state_dict": "state_dict.<upstream key>",
            "complex": "complex tensors (RoPE freqs) stored as torch.view_as_real(freqs): trailing dim 2 = (re, im)",
            "key_padding_mask": "stored as bool; True = real token, False = padding",
            "attn_mask": "stored as bool; True = may attend",
            "cache": "cache.<token name>.k / cache.<token name>.v: (batch, num_heads, n_tokens, head_dim), K post-RoPE",
            "passes": "multi-pass cases prefix second-pass tensors with 'query.'",
            "outputs": "computed in eval mode under torch.no_grad after SGD training",
        },
        "init_modes": init,
        "errors": errors,
        "observations": obs,
    }
    assert importlib.metadata.version("emmiai-noether") == UPSTREAM_VERSION
    writer.write(extra)
    verify(OUT_DIR)


if __name__ == "__main__":
    main()
