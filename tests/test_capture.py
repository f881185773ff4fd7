"""Recording attention calls of whole models: what the capture file holds, and the errors instead of bad files."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from torch import nn

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.explorer.capture import CaptureError, capture_attention, recognise
from noether.modeling.modules.attention import (
    DotProductAttention,
    DotProductAttentionConfig,
    MixedAttention,
    MixedAttentionConfig,
    SelfAnchorAttention,
    SelfAnchorAttentionConfig,
)

CAPTURE_SOURCE = Path(__file__).resolve().parents[1] / "noether" / "explorer" / "capture.py"
HIDDEN, HEADS = 16, 2
SPECS = [TokenSpec(name="surface_anchors", size=6), TokenSpec(name="surface_queries", size=4)]
PATTERNS = [AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"])]
CACHED_SPECS = [TokenSpec(name="surface_anchors", size=None), TokenSpec(name="surface_queries", size=4)]


def read_capture(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    return json.loads(metadata["manifest"]), tensors, metadata


def referenced_keys(manifest: dict) -> list[str]:
    """Every tensor key the manifest names (modules, calls, positions)."""
    keys: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            keys.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for module in manifest["modules"].values():
        walk(module["parameters"])
    for call in manifest["calls"]:
        for name in ("inputs", "kv_cache", "new_kv_cache"):
            walk(call[name])
        keys.append(call["output"])
    walk(manifest["positions"])
    return keys


def rope_freqs(batch: int, tokens: int, seed: int = 0) -> torch.Tensor:
    angles = torch.rand(batch, tokens, HIDDEN // HEADS // 2, generator=torch.Generator().manual_seed(seed)) * 6
    return torch.polar(torch.ones_like(angles), angles)


def mixed(use_rope: bool = False) -> MixedAttention:
    return MixedAttention(MixedAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=use_rope))


class SharedTwice(nn.Module):
    """One MixedAttention used by two blocks (shared weights): one module, two calls."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = mixed()
        self.dot = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, SPECS, PATTERNS)[0]
        x = x + self.attn(x=x, token_specs=SPECS, attention_patterns=PATTERNS, key_padding_mask=None)[0]
        return self.dot(x)


class PerceiverLike(nn.Module):
    """Queries from one tensor, keys/values from another (kv_dim inputs), the signature of a perceiver module."""

    def __init__(self, hidden_dim: int, num_heads: int, kv_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.use_rope = num_heads, hidden_dim // num_heads, False
        self.q = nn.Linear(hidden_dim, hidden_dim)
        self.k = nn.Linear(kv_dim, hidden_dim)
        self.v = nn.Linear(kv_dim, hidden_dim)
        self.proj = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, q, kv=None, attn_mask=None, q_freqs=None, k_freqs=None, kv_cache=None):
        heads = lambda t: t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # noqa: E731
        if kv_cache is None:
            kv_cache = {"k": heads(self.k(kv)), "v": heads(self.v(kv))}
            new_cache = kv_cache
        else:
            new_cache = None
        out = F.scaled_dot_product_attention(heads(self.q(q)), kv_cache["k"], kv_cache["v"], attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).flatten(2)), new_cache


class WeightBank(nn.Module):
    """A projection with one weight matrix per token domain, like upstream's untied linear layers."""

    def __init__(self, dim: int, num_types: int) -> None:
        super().__init__()
        self.num_types = num_types
        self.weight = nn.ParameterList([nn.Parameter(torch.randn(dim, dim) * 0.1) for _ in range(num_types)])
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight[0].T


class UntiedLike(nn.Module):
    """A mixed-attention signature with weight banks that returns a bare tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, HIDDEN // HEADS
        self.q, self.k, self.v, self.proj = (WeightBank(HIDDEN, 2) for _ in range(4))

    def forward(self, x, token_specs, attention_patterns, key_padding_mask=None, freqs=None, kv_cache=None):
        return self.proj(x)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_records_every_call_with_ids_parameters_once_and_only_referenced_tensors(tmp_path):
    torch.manual_seed(0)
    model = SharedTwice().eval()
    x = torch.randn(2, 10, HIDDEN)
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    path = cap.save(tmp_path / "m.capture.safetensors")
    manifest, tensors, metadata = read_capture(path)

    assert set(metadata) == {"format", "format_version", "manifest"}
    assert (metadata["format"], metadata["format_version"]) == ("noether-attention-capture", "1")
    assert manifest["format_version"] == 1 and manifest["activations_dtype"] == "float32"
    assert [c["id"] for c in manifest["calls"]] == ["attn#0", "attn#1", "dot#0"]
    assert [c["kind"] for c in manifest["calls"]] == ["mixed", "mixed", "dot_product"]
    assert manifest["modules"]["attn"]["config"] == {
        "hidden_dim": HIDDEN,
        "num_heads": HEADS,
        "use_rope": False,
        "bias": True,
        "qk_norm": False,
    }
    assert sorted(manifest["modules"]["attn"]["parameters"]) == sorted(model.attn.state_dict())
    keys = referenced_keys(manifest)
    assert len(keys) == len(set(keys)) and set(keys) == set(tensors)
    # Both calls of the shared module record their own input; the second input is the first one plus its output.
    first, second = manifest["calls"][:2]
    assert torch.equal(tensors[first["inputs"]["x"]], x)
    assert torch.allclose(tensors[second["inputs"]["x"]], x + tensors[first["output"]], atol=1e-6)
    assert torch.equal(tensors[manifest["modules"]["attn"]["parameters"]["q.weight"]], model.attn.q.weight)
    assert first["token_specs"] == [{"name": "surface_anchors", "size": 6}, {"name": "surface_queries", "size": 4}]
    assert first["attention_patterns"] == [
        {"query_tokens": ["surface_anchors", "surface_queries"], "key_value_tokens": ["surface_anchors"]}
    ]
    assert set(first["new_kv_cache"]) == {"surface_anchors"}
    assert manifest["calls"][2]["new_kv_cache"] is None and manifest["not_explorable"] == []
    assert manifest["skipped_modules"] == []
    assert no_hooks(model)


def test_positional_and_keyword_arguments_are_recorded_alike(tmp_path):
    module = mixed(use_rope=True).eval()
    x, freqs = torch.randn(1, 10, HIDDEN), rope_freqs(1, 10)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 5] = False
    with torch.no_grad(), capture_attention(module) as cap:
        module(x, SPECS, PATTERNS, mask, freqs)
        module(x=x, token_specs=SPECS, attention_patterns=PATTERNS, key_padding_mask=mask, freqs=freqs)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "pk.capture.safetensors"))
    positional, keyword = manifest["calls"]
    assert [positional["id"], keyword["id"]] == ["#0", "#1"] and positional["module"] == ""
    for call in (positional, keyword):
        assert torch.equal(tensors[call["inputs"]["x"]], x)
        assert tensors[call["inputs"]["key_padding_mask"]].dtype == torch.bool
        assert torch.equal(tensors[call["inputs"]["key_padding_mask"]], mask)
        stored = tensors[call["inputs"]["freqs"]]
        assert call["inputs"]["freqs"] in manifest["complex_tensors"] and stored.shape[-1] == 2
        assert torch.equal(torch.view_as_complex(stored), freqs)
    assert torch.equal(tensors[positional["output"]], tensors[keyword["output"]])


def test_two_pass_kv_cache_records_incoming_cache_and_pads(tmp_path):
    model = SelfAnchorAttention(SelfAnchorAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, branches=["surface"]))
    model.eval()
    x = torch.randn(1, 10, HIDDEN)
    with torch.no_grad(), capture_attention(model) as cap:
        _, cache = model(x, SPECS)
        out, _ = model(torch.randn(1, 4, HIDDEN), CACHED_SPECS, kv_cache=cache)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "kv.capture.safetensors"))
    anchor_pass, query_pass = manifest["calls"]
    # The wrapper has no attention_patterns argument: the inner MixedAttention is what gets recorded.
    assert [anchor_pass["id"], query_pass["id"]] == ["mixed_attention#0", "mixed_attention#1"]
    assert anchor_pass["kv_cache"] is None and query_pass["new_kv_cache"] is None
    assert query_pass["token_specs"][0] == {"name": "surface_anchors", "size": None}
    for part in ("k", "v"):
        incoming = tensors[query_pass["kv_cache"]["surface_anchors"][part]]
        assert torch.equal(incoming, tensors[anchor_pass["new_kv_cache"]["surface_anchors"][part]])
        assert torch.equal(incoming, cache["surface_anchors"][part])
    assert torch.equal(tensors[query_pass["output"]], out)


def test_perceiver_untied_and_dict_arguments(tmp_path):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.perceiver = PerceiverLike(HIDDEN, HEADS, kv_dim=3)
            self.untied = UntiedLike()
            self.attn = mixed()

        def forward(self, queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            out, cache = self.perceiver(q=queries, kv=points)
            out = out + self.perceiver(queries, kv_cache=cache)[0]
            out = self.untied(out, SPECS, None)
            specs = [{"surface_anchors": 6}, {"name": "surface_queries", "size": 4}]
            patterns = [
                {"query_tokens": ("surface_anchors", "surface_queries"), "key_value_tokens": ["surface_anchors"]}
            ]
            out = self.untied(out, specs, patterns)
            return self.attn(out, SPECS, PATTERNS)[0]

    model = Model().eval()
    assert [recognise(m) for m in (model.perceiver, model.untied, model.attn)] == ["perceiver", "untied_mixed", "mixed"]
    queries, points = torch.randn(1, 10, HIDDEN), torch.randn(1, 7, 3)
    with torch.no_grad(), capture_attention(model) as cap:
        model(queries, points)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "p.capture.safetensors"))
    first, second, untied, untied_dicts, attn = manifest["calls"]
    assert manifest["modules"]["perceiver"]["config"]["kv_dim"] == 3
    assert set(first["inputs"]) == {"q", "kv", "attn_mask", "q_freqs", "k_freqs"} and "token_specs" not in first
    assert torch.equal(tensors[first["inputs"]["kv"]], points) and second["inputs"]["kv"] is None
    assert set(first["new_kv_cache"]) == {"k", "v"} and set(second["kv_cache"]) == {"k", "v"}
    assert torch.equal(tensors[second["kv_cache"]["k"]], tensors[first["new_kv_cache"]["k"]])
    assert untied["kind"] == "untied_mixed" and "attention_patterns" not in untied
    assert manifest["modules"]["untied"]["explorable"] is False
    assert manifest["modules"]["untied"]["config"]["num_types"] == 2
    assert [(e["id"], e["class_name"]) for e in manifest["not_explorable"]] == [
        ("untied#0", "UntiedLike"),
        ("untied#1", "UntiedLike"),
    ]
    # Dict forms of token specs and patterns are recorded like the pydantic objects.
    assert untied_dicts["token_specs"] == attn["token_specs"]
    assert untied_dicts["attention_patterns"] == attn["attention_patterns"]


def test_attention_like_modules_of_another_kind_are_listed_as_skipped(tmp_path):
    class SliceAttention(nn.Module):  # q, k, v, proj but forward(x, attn_mask): not a kind the capture records
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.proj = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))

        def forward(self, x, attn_mask=None):
            return self.proj(x)

    model = nn.ModuleDict({"slices": SliceAttention(), "attn": mixed()})
    assert recognise(model["slices"]) is None
    with torch.no_grad(), capture_attention(model) as cap:
        model["attn"](model["slices"](torch.randn(1, 10, HIDDEN)), SPECS, PATTERNS)
    manifest, _, _ = read_capture(cap.save(tmp_path / "skipped.capture.safetensors"))
    assert [call["id"] for call in manifest["calls"]] == ["attn#0"]
    assert [(s["module"], s["class_name"]) for s in manifest["skipped_modules"]] == [("slices", "SliceAttention")]


class Permissive(nn.Module):
    """The mixed-attention structure and signature, accepting any token specs: only the recording is under test."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, HIDDEN // HEADS
        self.q, self.k, self.v, self.proj = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))

    def forward(self, x, token_specs, attention_patterns, key_padding_mask=None, freqs=None, kv_cache=None):
        return x, None


GROUP = st.tuples(
    st.text(min_size=1, max_size=12).filter(lambda name: name != "name"), st.none() | st.integers(0, 10**6)
)


@given(st.lists(st.tuples(GROUP, st.sampled_from(["pydantic", "explicit", "single", "numpy size"])), max_size=6))
@pytest.mark.slow
def test_token_specs_in_every_form_are_recorded_as_name_and_size(groups):
    forms = {
        "pydantic": lambda name, size: TokenSpec(name=name, size=size),
        "explicit": lambda name, size: {"name": name, "size": size},
        "single": lambda name, size: {name: size},
        "numpy size": lambda name, size: {"name": name, "size": None if size is None else np.int64(size)},
    }
    specs = [forms[form](*group) for group, form in groups]
    patterns = [AttentionPattern(query_tokens=[name], key_value_tokens=[name]) for (name, _), _ in groups]
    module = Permissive()
    with torch.no_grad(), capture_attention(module) as cap:
        module(torch.zeros(1, 1, HIDDEN), specs, patterns)
    recorded = cap.calls[0]["token_specs"]
    assert recorded == [{"name": name, "size": size} for (name, size), _ in groups]
    assert all(spec["size"] is None or type(spec["size"]) is int for spec in recorded)
    assert cap.calls[0]["attention_patterns"] == [
        {"query_tokens": [n], "key_value_tokens": [n]} for (n, _), _ in groups
    ]


def test_layers_globs_keep_only_matching_modules(tmp_path):
    model = nn.ModuleDict({"blocks": nn.ModuleList([mixed(), mixed(), mixed()])})
    x = torch.randn(1, 10, HIDDEN)
    with torch.no_grad(), capture_attention(model, layers=["blocks.0", "blocks.[2]"]) as cap:
        for block in model["blocks"]:
            x = block(x, SPECS, PATTERNS)[0]
    assert [call["id"] for call in cap.calls] == ["blocks.0#0", "blocks.2#0"]
    assert sorted(cap.modules) == ["blocks.0", "blocks.2"]
    with pytest.raises(CaptureError, match=r"matches none .*blocks\.1"), capture_attention(model, layers="decoder.*"):
        pass
    assert no_hooks(model)


@given(st.sets(st.integers(0, 3)))
@pytest.mark.slow
def test_layers_keep_exactly_the_matching_paths(chosen):
    model = nn.ModuleList([mixed() for _ in range(4)])
    patterns = [str(i) for i in sorted(chosen)] or ["*"]
    x = torch.randn(1, 10, HIDDEN)
    with torch.no_grad(), capture_attention(model, layers=patterns) as cap:
        for block in model:
            block(x, SPECS, PATTERNS)
    assert [call["module"] for call in cap.calls] == (patterns if chosen else ["0", "1", "2", "3"])


def test_hooks_are_removed_when_the_forward_raises():
    model = nn.ModuleList([mixed(), mixed()])
    with pytest.raises(ValueError, match="Token specs total size"), capture_attention(model):
        model[0](torch.randn(1, 10, HIDDEN), SPECS, PATTERNS)
        model[1](torch.randn(1, 9, HIDDEN), SPECS, PATTERNS)
    assert no_hooks(model)
    model[0](torch.randn(1, 10, HIDDEN), SPECS, PATTERNS)  # runs unrecorded afterwards


def test_activations_dtype_halves_the_file_and_keeps_parameters(tmp_path):
    module = mixed(use_rope=True)
    x, freqs = torch.randn(1, 4000, HIDDEN), rope_freqs(1, 4000)
    specs = [TokenSpec(name="surface_anchors", size=3000), TokenSpec(name="surface_queries", size=1000)]
    sizes = {}
    for dtype in (None, torch.float16):
        with torch.no_grad(), capture_attention(module, activations_dtype=dtype) as cap:
            module(x, specs, PATTERNS, freqs=freqs)
        path = cap.save(tmp_path / f"{dtype}.capture.safetensors")
        sizes[dtype] = path.stat().st_size
        manifest, tensors, _ = read_capture(path)
        call = manifest["calls"][0]
        assert tensors[call["inputs"]["x"]].dtype == (dtype or torch.float32)
        assert tensors[call["output"]].dtype == (dtype or torch.float32)
        assert tensors[call["inputs"]["freqs"]].dtype == torch.float32
        assert tensors[manifest["modules"][""]["parameters"]["q.weight"]].dtype == torch.float32
        assert manifest["activations_dtype"] == ("float16" if dtype else "float32")
    # x, output and the anchor KV cache halve; RoPE frequencies (a quarter of x here) do not.
    assert sizes[torch.float16] < 0.6 * sizes[None]


def test_a_capture_records_one_block_only():
    module = mixed()
    cap = capture_attention(module)
    with cap:
        module(torch.randn(1, 10, HIDDEN), SPECS, PATTERNS)
        with pytest.raises(CaptureError, match=r"Call save\(\) after the `with"):
            cap.save("never.capture.safetensors")
    with pytest.raises(CaptureError, match="records one `with` block"), cap:
        pass
    assert no_hooks(module) and len(cap.calls) == 1


def test_estimate_matches_the_written_size(tmp_path):
    model = SharedTwice()
    with torch.no_grad(), capture_attention(model) as cap:
        model(torch.randn(3, 10, HIDDEN))
    size = cap.save(tmp_path / "e.capture.safetensors").stat().st_size
    assert size <= cap.estimated_bytes <= size * 1.05 + 512


def test_max_bytes_refuses_before_writing_with_the_estimate(tmp_path):
    module = mixed()
    x = torch.randn(1, 10_000, HIDDEN)
    specs = [TokenSpec(name="surface_anchors", size=2000), TokenSpec(name="surface_queries", size=8000)]
    with torch.no_grad(), capture_attention(module, max_bytes=100_000) as cap:
        module(x, specs, PATTERNS)
    # x and the output alone are 640 kB; past the budget only sizes are kept, not copies.
    assert cap.estimated_bytes > 2 * 10_000 * HIDDEN * 4
    assert sum(t.numel() * t.element_size() for t in cap._tensors.values() if isinstance(t, torch.Tensor)) <= 100_000
    target = tmp_path / "big.capture.safetensors"
    with pytest.raises(CaptureError, match=r"about 1\.4\d MiB \([\d,]+ bytes\), over max_bytes=97\.66 KiB"):
        cap.save(target)
    assert list(tmp_path.iterdir()) == []


def test_no_recognised_module_names_the_classes_seen():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    with (
        pytest.raises(CaptureError, match=r"No attention module recognised.*'GELU', 'Linear', 'Sequential'"),
        capture_attention(model),
    ):
        model(torch.randn(1, 4))
    assert no_hooks(model)


def test_recognised_module_never_called_is_an_error():
    model = nn.ModuleDict({"attn": mixed(), "mlp": nn.Linear(HIDDEN, HIDDEN)})
    with (
        pytest.raises(CaptureError, match=r"no call to a recognised attention module \(recognised: \['attn'\]\)"),
        capture_attention(model),
    ):
        model["mlp"](torch.randn(1, HIDDEN))
    assert no_hooks(model)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((SPECS, [42]), r"attn \(MixedAttention, call attn#0\).*attention_patterns\[0\]: expected an AttentionPattern"),
        (([TokenSpec(name="a", size=10), 3], PATTERNS), r"attn \(MixedAttention.*token_specs\[1\]: expected a Token"),
        (("surface", PATTERNS), r"attn \(MixedAttention.*token_specs must be a list, got str"),
    ],
)
def test_unreadable_arguments_name_the_module_path(args, message):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mixed()

        def forward(self, x: torch.Tensor) -> None:
            self.attn(x, *args)

    model = Model()
    with pytest.raises(CaptureError, match=message), capture_attention(model):
        model(torch.randn(1, 10, HIDDEN))
    assert no_hooks(model)


def test_a_call_that_cannot_be_read_leaves_nothing_behind(tmp_path):
    module = mixed()
    x = torch.randn(1, 10, HIDDEN)
    with torch.no_grad(), capture_attention(module) as cap:
        module(x, SPECS, PATTERNS)
        with pytest.raises(CaptureError, match=r"<root> \(MixedAttention, call #1\).*kv_cache must be a dict"):
            module(x, SPECS, PATTERNS, kv_cache=[1])
        module(x, SPECS, PATTERNS)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "after-error.capture.safetensors"))
    assert [call["id"] for call in manifest["calls"]] == ["#0", "#1"]
    assert set(referenced_keys(manifest)) == set(tensors)


def test_additive_masks_are_stored_finite_with_the_same_output(tmp_path):
    module = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS)).eval()
    x = torch.randn(1, 5, HIDDEN)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    biased = causal + torch.randn(5, 5)
    with torch.no_grad(), capture_attention(module) as cap:
        module(x, attn_mask=causal)
        module(x, attn_mask=biased)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "masks.capture.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
    for call, original in zip(manifest["calls"], (causal, biased), strict=True):
        stored = tensors[call["inputs"]["attn_mask"]]
        with torch.no_grad():
            assert torch.allclose(module(x, attn_mask=stored), module(x, attn_mask=original), atol=1e-6)
    assert tensors[manifest["calls"][0]["inputs"]["attn_mask"]].dtype == torch.bool


def test_legacy_tuple_freqs_are_refused_by_name():
    module = DotProductAttention(DotProductAttentionConfig(hidden_dim=HIDDEN, num_heads=HEADS, use_rope=True))
    freqs = (torch.zeros(1, 5, 4),)
    with (
        pytest.raises(CaptureError, match=r"<root> \(DotProductAttention.*freqs must be a tensor or None, got tuple"),
        capture_attention(module),
    ):
        module(torch.randn(1, 5, HIDDEN), freqs=freqs)


def test_positions_are_stored_and_checked(tmp_path):
    module = mixed()
    coords = torch.rand(6, 3)
    with torch.no_grad(), capture_attention(module, positions={"surface_anchors": coords}) as cap:
        module(torch.randn(1, 10, HIDDEN), SPECS, PATTERNS)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "pos.capture.safetensors"))
    assert torch.equal(tensors[manifest["positions"]["surface_anchors"]], coords)
    with (
        pytest.raises(CaptureError, match=r"positions\['surface_anchors'\] must be a tensor of point coordinates"),
        capture_attention(module, positions={"surface_anchors": [1.0, 2.0]}),
    ):
        pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activations_dtype": torch.int8}, r"activations_dtype must be one of \['bfloat16', 'float16', 'float32'\]"),
        ({"max_bytes": 0}, "max_bytes must be a positive number of bytes"),
        ({"layers": [3]}, "layers must be glob patterns"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(CaptureError, match=message):
        capture_attention(mixed(), **kwargs)


@pytest.mark.slow
def test_standalone_copy_records_where_another_noether_package_shadows_ours(tmp_path):
    """The README's way for upstream users: load capture.py under a name of its own, with `noether` not ours."""
    fake = tmp_path / "site" / "noether"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("OWNER = 'someone else'\n")
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(tmp_path / "site")!r})
        import noether
        assert noether.OWNER == "someone else"

        spec = importlib.util.spec_from_file_location("noether_capture", {str(CAPTURE_SOURCE)!r})
        noether_capture = importlib.util.module_from_spec(spec)
        sys.modules["noether_capture"] = noether_capture
        spec.loader.exec_module(noether_capture)

        import torch
        from torch import nn
        import torch.nn.functional as F

        class MixedAttention(nn.Module):  # same structure and signature as upstream's, defined here
            def __init__(self, dim, heads):
                super().__init__()
                self.num_heads, self.head_dim, self.use_rope = heads, dim // heads, False
                self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

            def forward(self, x, token_specs, attention_patterns, key_padding_mask=None, freqs=None, kv_cache=None):
                h = lambda t: t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
                out = F.scaled_dot_product_attention(h(self.q(x)), h(self.k(x)), h(self.v(x)))
                return self.proj(out.transpose(1, 2).flatten(2)), None

        class TokenSpec:
            def __init__(self, name, size):
                self.name, self.size = name, size

        model = nn.Sequential()
        model.add_module("attn", MixedAttention(8, 2))
        with noether_capture.capture_attention(model) as cap:
            pattern = {{"query_tokens": ["a"], "key_value_tokens": ["a"]}}
            model.attn(torch.randn(1, 5, 8), [TokenSpec("a", 5)], [pattern])
        cap.save(sys.argv[1])
        print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "noether")))
        """
    )
    target = tmp_path / "standalone.capture.safetensors"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["noether"]  # only the fake one was imported
    manifest, _, _ = read_capture(target)
    assert [call["id"] for call in manifest["calls"]] == ["attn#0"]
    assert manifest["modules"]["attn"]["class_name"] == "MixedAttention"


def test_capture_module_imports_nothing_from_noether():
    source = CAPTURE_SOURCE.read_text()
    assert "import noether" not in source and "from noether" not in source


def test_tensors_on_any_device_are_stored_on_cpu(tmp_path, device):
    module = mixed(use_rope=True).to(device).eval()
    x, freqs = torch.randn(1, 10, HIDDEN, device=device), rope_freqs(1, 10).to(device)
    with torch.no_grad(), capture_attention(module, activations_dtype="bfloat16") as cap:
        out, _ = module(x, SPECS, PATTERNS, freqs=freqs)
    manifest, tensors, _ = read_capture(cap.save(tmp_path / "dev.capture.safetensors"))
    call = manifest["calls"][0]
    assert manifest["activations_dtype"] == "bfloat16"
    assert torch.equal(tensors[call["inputs"]["x"]], x.cpu().bfloat16())
    assert torch.equal(tensors[call["output"]], out.cpu().bfloat16())
    assert torch.equal(torch.view_as_complex(tensors[call["inputs"]["freqs"]]), freqs.cpu())
