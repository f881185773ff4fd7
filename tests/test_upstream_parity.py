"""Parity with the real upstream ``emmiai-noether==2026.4.0``, pinned in committed fixtures.

The fixtures under ``tests/fixtures/upstream/`` are produced by ``scripts/make_upstream_fixtures.py`` from the
upstream package; these tests only read them. A missing fixture folder is an error, not a skip: the fixtures are
committed, and without them nothing here would check anything.
"""

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import load_file

import noether.core.schemas.modules.attention as schema_attention
import noether.core.schemas.modules.layers as schema_layers
import noether.modeling.modules.attention as modeling_attention
import noether.modeling.modules.attention.anchor_attention as anchor_attention
import noether.modeling.modules.layers as modeling_layers
from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import ContinuousSincosEmbeddingConfig, RopeFrequencyConfig
from noether.modeling.functional.rope import rope
from noether.modeling.modules.attention import (
    CrossAnchorAttention,
    CrossAnchorAttentionConfig,
    DotProductAttention,
    DotProductAttentionConfig,
    JointAnchorAttention,
    JointAnchorAttentionConfig,
    MixedAttention,
    MixedAttentionConfig,
    MultiBranchAnchorAttentionConfig,
    PerceiverAttention,
    PerceiverAttentionConfig,
    SelfAnchorAttention,
)
from noether.modeling.modules.layers import ContinuousSincosEmbed, RopeFrequency

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
CASES_JSON = FIXTURES / "cases.json"
ATOL = 1e-5
RTOL = 0.0

# Fields our configs have on top of upstream 2026.4.0 (upstream has no qk_norm; it silently ignores it as an extra).
OUR_EXTRA_CONFIG_FIELDS = {"qk_norm"}


@cache
def load_document() -> dict[str, Any]:
    """The parsed ``cases.json``; fails (not skips) when the committed fixtures are missing."""
    if not CASES_JSON.is_file():
        pytest.fail(f"upstream fixtures missing: {CASES_JSON} not found (run scripts/make_upstream_fixtures.py)")
    return json.loads(CASES_JSON.read_text())


def _names(section: str) -> list[str]:
    """Case names for parametrisation; a placeholder when the fixtures are missing so that the tests fail."""
    if not CASES_JSON.is_file():
        return ["<fixtures missing>"]
    document = json.loads(CASES_JSON.read_text())
    return [entry["name"] for entry in document[section]]


def case_by_name(section: str, name: str) -> dict[str, Any]:
    entries = [entry for entry in load_document()[section] if entry["name"] == name]
    assert len(entries) == 1, f"{section} has {len(entries)} entries named {name!r}"
    return entries[0]


def load_tensors(file_name: str) -> dict[str, torch.Tensor]:
    path = FIXTURES / file_name
    assert path.is_file(), f"fixture file {path} listed in cases.json is missing"
    return load_file(str(path))


def resolve_class(name: str) -> type:
    """Our class of the given upstream class name, looked up in the public modules."""
    for module in (modeling_attention, anchor_attention, modeling_layers, schema_attention, schema_layers):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"upstream class {name!r} has no counterpart in noether")


def as_complex(tensor: torch.Tensor) -> torch.Tensor:
    """Fixture convention: complex tensors are stored as ``torch.view_as_real``."""
    return torch.view_as_complex(tensor.contiguous())


def token_specs_from(entries: list[dict[str, Any]]) -> list[TokenSpec]:
    return [TokenSpec(**entry) for entry in entries]


def patterns_from(entries: list[dict[str, Any]]) -> list[AttentionPattern]:
    return [AttentionPattern(**entry) for entry in entries]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def assert_dump_matches_upstream(ours: dict[str, Any], upstream: dict[str, Any], what: str) -> None:
    """Our ``model_dump`` equals upstream's, apart from the fields we add on top."""
    extra = set(ours) - set(upstream)
    assert extra <= OUR_EXTRA_CONFIG_FIELDS, f"{what}: unexpected extra fields {extra}"
    assert {key: ours[key] for key in upstream} == upstream, what


# ----------------------------------------------------------------------------------------------------------------------
# Fixture inventory
# ----------------------------------------------------------------------------------------------------------------------


def test_fixtures_are_present_and_pinned_to_the_upstream_version() -> None:
    document = load_document()
    assert document["upstream"]["package"] == "emmiai-noether"
    assert document["upstream"]["version"] == "2026.4.0"
    kinds = {case["kind"] for case in document["cases"]}
    assert {"module", "rope_frequency", "sincos_embed"} <= kinds
    module_classes = {case["module_class"] for case in document["cases"]}
    assert {
        "DotProductAttention",
        "MixedAttention",
        "SelfAnchorAttention",
        "CrossAnchorAttention",
        "PerceiverAttention",
    } <= module_classes


def test_every_fixture_file_belongs_to_a_case() -> None:
    document = load_document()
    referenced = {case["file"] for case in document["cases"]} | {document["init_modes"]["file"]}
    on_disk = {path.name for path in FIXTURES.glob("*.safetensors")}
    assert on_disk == referenced


@pytest.mark.parametrize("case_name", _names("cases"))
def test_fixture_tensors_match_their_description(case_name: str) -> None:
    case = case_by_name("cases", case_name)
    tensors = load_tensors(case["file"])
    assert set(tensors) == set(case["tensors"])
    for key, info in case["tensors"].items():
        assert list(tensors[key].shape) == info["shape"], key
        assert str(tensors[key].dtype).removeprefix("torch.") == info["dtype"], key


# ----------------------------------------------------------------------------------------------------------------------
# Cases: modules, RoPE frequencies, sin-cos embedding
# ----------------------------------------------------------------------------------------------------------------------


def _cache_from_pass(tensors: dict[str, torch.Tensor], pass_: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {"k": tensors[keys["k"]], "v": tensors[keys["v"]]} for name, keys in pass_["new_kv_cache_tensors"].items()
    }


def _run_module_case(case: dict[str, Any]) -> None:
    tensors = load_tensors(case["file"])
    config_cls = resolve_class(case["config_class"])
    module_cls = resolve_class(case["module_class"])
    config = config_cls(**case["config"])
    assert_dump_matches_upstream(config.model_dump(), case["config_dump"], f"{case['name']} config dump")

    module = module_cls(config).eval()
    state_dict = {
        key.removeprefix("state_dict."): value for key, value in tensors.items() if key.startswith("state_dict.")
    }
    module.load_state_dict(state_dict, strict=True)

    if module_cls is PerceiverAttention:
        _run_perceiver_passes(case, module, tensors)
        return
    passes_by_name = {pass_["name"]: pass_ for pass_ in case["passes"]}
    for pass_ in case["passes"]:
        what = f"{case['name']}[{pass_['name']}]"
        inputs = pass_["inputs"]
        x = tensors[inputs["x"]]
        kwargs: dict[str, Any] = {}
        if inputs.get("freqs"):
            kwargs["freqs"] = as_complex(tensors[inputs["freqs"]])
        if module_cls is DotProductAttention:
            if inputs.get("attn_mask"):
                kwargs["attn_mask"] = tensors[inputs["attn_mask"]]
            with torch.no_grad():
                out = module(x, **kwargs)
            assert_close(out, tensors[pass_["outputs"]["out"]], f"{what} out")
            continue

        token_specs = token_specs_from(pass_["token_specs"])
        if inputs.get("key_padding_mask"):
            kwargs["key_padding_mask"] = tensors[inputs["key_padding_mask"]]
        if inputs.get("kv_cache"):
            # Replay with upstream's recorded cache, so that this pass is checked on its own.
            kwargs["kv_cache"] = _cache_from_pass(tensors, passes_by_name["main"])
        with torch.no_grad():
            if "attention_patterns" in pass_:
                out, new_cache = module(x, token_specs, patterns_from(pass_["attention_patterns"]), **kwargs)
            else:
                derived = [
                    (list(p.query_tokens), list(p.key_value_tokens)) for p in module.attention_patterns(token_specs)
                ]
                expected = [(p["query_tokens"], p["key_value_tokens"]) for p in pass_["derived_attention_patterns"]]
                assert derived == expected, f"{what} derived patterns"
                out, new_cache = module(x, token_specs, **kwargs)

        assert_close(out, tensors[pass_["outputs"]["out"]], f"{what} out")
        if pass_["new_kv_cache"] is None:
            assert new_cache is None, f"{what}: cached pass must return None as new_kv_cache"
            continue
        assert new_cache is not None
        assert list(new_cache) == pass_["new_kv_cache"], f"{what} new_kv_cache groups"
        for name, keys in pass_["new_kv_cache_tensors"].items():
            assert_close(new_cache[name]["k"], tensors[keys["k"]], f"{what} cache {name}.k")
            assert_close(new_cache[name]["v"], tensors[keys["v"]], f"{what} cache {name}.v")


def _optional(tensors: dict[str, torch.Tensor], key: str | None, complex_: bool = False) -> torch.Tensor | None:
    if not key:
        return None
    return as_complex(tensors[key]) if complex_ else tensors[key]


def _run_perceiver_passes(case: dict[str, Any], module: PerceiverAttention, tensors: dict[str, torch.Tensor]) -> None:
    """Every pass of a perceiver case; a cached pass replays upstream's recorded cache so it is checked on its own."""
    recorded_cache = {"k": tensors["cache.k"], "v": tensors["cache.v"]}
    for pass_ in case["passes"]:
        what = f"{case['name']}[{pass_['name']}]"
        inputs = pass_["inputs"]
        with torch.no_grad():
            out, new_cache = module(
                tensors[inputs["q"]],
                _optional(tensors, inputs["kv"]),
                attn_mask=_optional(tensors, inputs["attn_mask"]),
                q_freqs=_optional(tensors, inputs["q_freqs"], complex_=True),
                k_freqs=_optional(tensors, inputs["k_freqs"], complex_=True),
                kv_cache=recorded_cache if inputs["kv_cache"] else None,
            )
        assert_close(out, tensors[pass_["outputs"]["out"]], f"{what} out")
        if pass_["new_kv_cache"] is None:
            assert new_cache is None, f"{what}: cached pass must return None as new_kv_cache"
            continue
        assert new_cache is not None and sorted(new_cache) == pass_["new_kv_cache"], f"{what} new_kv_cache keys"
        for key, tensor_key in pass_["new_kv_cache_tensors"].items():
            assert_close(new_cache[key], tensors[tensor_key], f"{what} cache {key}")


@pytest.mark.parametrize("case_name", [name for name in _names("cases") if name.startswith("perceiver")])
def test_perceiver_init_matches_upstream_bit_for_bit(case_name: str) -> None:
    """Same seed, same config: the freshly built module has upstream's exact weights (same RNG draws, same order)."""
    case = case_by_name("cases", case_name)
    tensors = load_tensors(case["file"])
    expected = {k.removeprefix("init_state_dict."): v for k, v in tensors.items() if k.startswith("init_state_dict.")}
    torch.manual_seed(case["seed"])
    state_dict = PerceiverAttention(PerceiverAttentionConfig(**case["config"])).state_dict()
    assert set(state_dict) == set(expected)  # safetensors sorts keys; the order is pinned by an observation
    for key, value in state_dict.items():
        assert torch.equal(value, expected[key]), f"{case_name}: {key} differs from upstream's with the same seed"


def _run_rope_frequency_case(case: dict[str, Any]) -> None:
    tensors = load_tensors(case["file"])
    config = RopeFrequencyConfig(**case["config"])
    assert config.model_dump() == case["config_dump"]
    module = RopeFrequency(config)
    assert module.padding == case["padding"]
    assert_close(module.omega, tensors["omega"], f"{case['name']} omega")
    (pass_,) = case["passes"]
    freqs = module(tensors[pass_["inputs"]["coords"]])
    assert str(freqs.dtype).removeprefix("torch.") == case["freqs_complex_dtype"]
    assert_close(torch.view_as_real(freqs), tensors[pass_["outputs"]["freqs"]], f"{case['name']} freqs")


def _run_sincos_case(case: dict[str, Any]) -> None:
    tensors = load_tensors(case["file"])
    config = ContinuousSincosEmbeddingConfig(**case["config"])
    assert config.model_dump() == case["config_dump"]
    module = ContinuousSincosEmbed(config)
    assert module.padding == case["padding"]
    assert sorted(name for name, _ in module.named_buffers()) == case["buffers"]
    assert_close(module.omega, tensors["omega"], f"{case['name']} omega")
    (pass_,) = case["passes"]
    embedding = module(tensors[pass_["inputs"]["coords"]])
    assert_close(embedding, tensors[pass_["outputs"]["embedding"]], f"{case['name']} embedding")


CASE_RUNNERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "module": _run_module_case,
    "rope_frequency": _run_rope_frequency_case,
    "sincos_embed": _run_sincos_case,
}


@pytest.mark.parametrize("case_name", _names("cases"))
def test_upstream_case(case_name: str) -> None:
    case = case_by_name("cases", case_name)
    assert case["kind"] in CASE_RUNNERS, f"unknown case kind {case['kind']!r}: teach this test to run it"
    CASE_RUNNERS[case["kind"]](case)


# ----------------------------------------------------------------------------------------------------------------------
# Init modes: same seed -> bit-identical weights as upstream; same failures
# ----------------------------------------------------------------------------------------------------------------------


def _init_mode_names() -> list[str]:
    if not CASES_JSON.is_file():
        return ["<fixtures missing>"]
    return list(json.loads(CASES_JSON.read_text())["init_modes"]["modes"])


@pytest.mark.parametrize("mode", _init_mode_names())
def test_init_mode_matches_upstream(mode: str) -> None:
    spec = load_document()["init_modes"]
    entry = spec["modes"][mode]
    build_config = lambda: DotProductAttentionConfig(**spec["config"], init_weights=mode)  # noqa: E731
    if entry["raises"] and entry["stage"] == "config":
        with pytest.raises(ValidationError) as excinfo:
            build_config()
        assert excinfo.value.errors()[0]["msg"] == entry["pydantic_msg"]
        return
    config = build_config()
    torch.manual_seed(spec["seed"])
    if entry["raises"]:
        assert entry["exc_type"] == "NotImplementedError"
        with pytest.raises(NotImplementedError, match=re.escape(mode)):
            DotProductAttention(config)
        return
    state_dict = DotProductAttention(config).state_dict()
    tensors = load_tensors(spec["file"])
    prefix = f"{mode}.state_dict."
    expected = {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}
    assert set(state_dict) == set(expected)
    for key, value in state_dict.items():
        assert torch.equal(value, expected[key]), f"{mode}: {key} differs from upstream with the same seed"


def test_init_mode_literal_matches_upstream() -> None:
    spec = load_document()["init_modes"]
    assert list(AttentionConfig.model_fields["init_weights"].annotation.__args__) == spec["init_weights_literal"]
    assert AttentionConfig.model_fields["init_weights"].default == spec["default"]


# ----------------------------------------------------------------------------------------------------------------------
# Errors: same exception class, the same check fires first, at least as informative a message
# ----------------------------------------------------------------------------------------------------------------------

# Where our message deliberately says something else than upstream's, the pattern it must match instead.
MESSAGE_DIVERGENCES: dict[str, str] = {
    # upstream reports the generic coverage error; we name the unknown query group and its pattern
    "unknown_query_token": r"Token 'ghost' in `query_tokens` of attention_patterns\[2\] is not defined",
    # upstream says "of an attention pattern"; we give the pattern's index
    "unknown_key_value_token": r"Token 'ghost_anchors' in `key_value_tokens` of attention_patterns\[0\] is not defined",
    "rope_frequency_effective_dim_zero": r"hidden_dim=2 leaves no features per coordinate axis for input_dim=3",
}

# Upstream fails with a bare assert / NotImplementedError (no message); we raise ValueError with a message instead.
BARE_UPSTREAM_ERRORS = {"AssertionError", "NotImplementedError"}


def _message_head(message: str) -> str:
    """The part of a message before the first ':', ',', '(' or sentence end: the name of the failed check."""
    return re.split(r"[:,(]|\.(?:\s|$)", message, maxsplit=1)[0].strip()


def _forward_error_call(entry: dict[str, Any]) -> Callable[[], object]:
    config = entry["config"]
    batch = entry["x_shape"][0]
    num_heads = config["num_heads"]
    head_dim = config["hidden_dim"] // num_heads
    config_cls = {
        "MixedAttention": MixedAttentionConfig,
        "SelfAnchorAttention": MultiBranchAnchorAttentionConfig,
        "CrossAnchorAttention": CrossAnchorAttentionConfig,
        "JointAnchorAttention": JointAnchorAttentionConfig,
    }[entry["module_class"]]
    module = resolve_class(entry["module_class"])(config_cls(**config)).eval()
    x = torch.randn(*entry["x_shape"])
    token_specs = token_specs_from(entry["token_specs"])
    kwargs: dict[str, Any] = {}
    if entry["key_padding_mask"] is not None:
        mask = entry["key_padding_mask"]
        kwargs["key_padding_mask"] = torch.ones(mask["shape"], dtype=getattr(torch, mask["dtype"]))
    if entry["freqs_shape"] is not None:
        kwargs["freqs"] = torch.polar(torch.ones(entry["freqs_shape"]), torch.rand(entry["freqs_shape"]))
    if entry["kv_cache"] is not None:
        kwargs["kv_cache"] = {
            name: {
                "k": torch.randn(batch, num_heads, size, head_dim),
                "v": torch.randn(batch, num_heads, size, head_dim),
            }
            for name, size in entry["kv_cache"].items()
        }
    if entry["attention_patterns"] is not None:
        patterns = patterns_from(entry["attention_patterns"])
        return lambda: module(x, token_specs, patterns, **kwargs)
    return lambda: module(x, token_specs, **kwargs)


def _complex_ones(*shape: int) -> torch.Tensor:
    return torch.polar(torch.ones(shape), torch.zeros(shape))


# The upstream expressions of the "construct" error cases, as callables of the case's kwargs.
CONSTRUCT_TARGETS: dict[str, Callable[[dict[str, Any]], object]] = {
    "CrossAnchorAttention(CrossAnchorAttentionConfig(**kwargs))": lambda kw: CrossAnchorAttention(
        CrossAnchorAttentionConfig(**kw)
    ),
    "JointAnchorAttention(JointAnchorAttentionConfig(**kwargs))": lambda kw: JointAnchorAttention(
        JointAnchorAttentionConfig(**kw)
    ),
    "SelfAnchorAttention(MultiBranchAnchorAttentionConfig(**kwargs))": lambda kw: SelfAnchorAttention(
        MultiBranchAnchorAttentionConfig(**kw)
    ),
    "MultiBranchAnchorAttentionConfig(**kwargs)": lambda kw: MultiBranchAnchorAttentionConfig(**kw),
    "CrossAnchorAttention(AttentionConfig(**kwargs))": lambda kw: CrossAnchorAttention(AttentionConfig(**kw)),
    "TokenSpec.from_dict(kwargs['token_dict'])": lambda kw: TokenSpec.from_dict(kw["token_dict"]),
    "TokenSpec(**kwargs)": lambda kw: TokenSpec(**kw),
    "TokenSpec(*kwargs['args'])": lambda kw: TokenSpec(*kw["args"]),
    "AttentionConfig(**kwargs)": lambda kw: AttentionConfig(**kw),
    "MixedAttentionConfig(**kwargs)": lambda kw: MixedAttentionConfig(**kw),
    "RopeFrequency(RopeFrequencyConfig(**kwargs))": lambda kw: RopeFrequency(RopeFrequencyConfig(**kw)),
    "RopeFrequency(RopeFrequencyConfig(**kwargs))(torch.rand(2, 5, 2))": lambda kw: RopeFrequency(
        RopeFrequencyConfig(**kw)
    )(torch.rand(2, 5, 2)),
    "ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(**kwargs))(torch.rand(2, 2, 5, 3))": lambda kw: (
        ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(**kw))(torch.rand(2, 2, 5, 3))
    ),
    "DotProductAttention(DotProductAttentionConfig(**kwargs))(torch.randn(2, 5, 32), freqs=<complex (2, 5, 8)>)": (
        lambda kw: DotProductAttention(DotProductAttentionConfig(**kw))(
            torch.randn(2, 5, 32), freqs=_complex_ones(2, 5, 8)
        )
    ),
    "DotProductAttention(DotProductAttentionConfig(**kwargs))(torch.randn(2, 5, 32))": lambda kw: DotProductAttention(
        DotProductAttentionConfig(**kw)
    )(torch.randn(2, 5, 32)),
}


_PERCEIVER = "PerceiverAttention(PerceiverAttentionConfig(**kwargs))"


def _perceiver(kw: dict[str, Any]) -> PerceiverAttention:
    return PerceiverAttention(PerceiverAttentionConfig(**kw))


CONSTRUCT_TARGETS.update(
    {
        f"{_PERCEIVER}(torch.randn(2, 5, 32))": lambda kw: _perceiver(kw)(torch.randn(2, 5, 32)),
        f"{_PERCEIVER}(torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=<complex (2, 5, 8)>)": lambda kw: (
            _perceiver(kw)(torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=_complex_ones(2, 5, 8))
        ),
        f"{_PERCEIVER}(torch.randn(2, 5, 32), torch.randn(2, 7, 32), k_freqs=<complex (2, 7, 8)>)": lambda kw: (
            _perceiver(kw)(torch.randn(2, 5, 32), torch.randn(2, 7, 32), k_freqs=_complex_ones(2, 7, 8))
        ),
        f"{_PERCEIVER}(torch.randn(2, 5, 32), kv_cache=<k, v (2, 2, 7, 16)>)": lambda kw: _perceiver(kw)(
            torch.randn(2, 5, 32), kv_cache={"k": torch.randn(2, 2, 7, 16), "v": torch.randn(2, 2, 7, 16)}
        ),
        f"{_PERCEIVER}(torch.randn(2, 5, 32), torch.randn(2, 7, 24))": lambda kw: _perceiver(kw)(
            torch.randn(2, 5, 32), torch.randn(2, 7, 24)
        ),
        f"{_PERCEIVER}(torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=<complex (2, 5, 8)>, "
        "k_freqs=<complex (2, 7, 8)>)": lambda kw: _perceiver(kw)(
            torch.randn(2, 5, 32), torch.randn(2, 7, 32), q_freqs=_complex_ones(2, 5, 8), k_freqs=_complex_ones(2, 7, 8)
        ),
        "PerceiverAttention(AttentionConfig(**kwargs))(torch.randn(2, 5, 32), torch.randn(2, 7, 24))": lambda kw: (
            PerceiverAttention(AttentionConfig(**kw))(torch.randn(2, 5, 32), torch.randn(2, 7, 24))
        ),
    }
)


def _error_call(entry: dict[str, Any]) -> Callable[[], object]:
    if entry["kind"] == "forward":
        return _forward_error_call(entry)
    assert entry["kind"] == "construct", entry["kind"]
    target = entry["target"]
    assert target in CONSTRUCT_TARGETS, f"unknown upstream expression {target!r}: add it to CONSTRUCT_TARGETS"
    return lambda: CONSTRUCT_TARGETS[target](entry["kwargs"])


@pytest.mark.parametrize("error_name", _names("errors"))
def test_error_matches_upstream(error_name: str) -> None:
    entry = case_by_name("errors", error_name)
    torch.manual_seed(0)
    call = _error_call(entry)
    if not entry["raises"]:
        call()  # a control case: must not raise
        return

    with pytest.raises(Exception) as excinfo:
        call()
    ours = excinfo.value
    our_mro = [klass.__name__ for klass in type(ours).__mro__]
    message = str(ours)

    if entry["exc_type"] in BARE_UPSTREAM_ERRORS and not entry["message"]:
        assert isinstance(ours, ValueError), f"expected a ValueError with a message, got {type(ours).__name__}"
        assert message.strip(), "our error has no message"
        return

    assert entry["exc_type"] in our_mro, f"upstream raises {entry['exc_type']}, we raise {our_mro}"
    for upstream_base in entry["exc_mro"]:
        assert upstream_base in our_mro, f"upstream's exception is a {upstream_base}, ours is not"

    if "pydantic_errors" in entry:
        assert isinstance(ours, ValidationError)
        ours_errors = [{"type": e["type"], "loc": list(e["loc"])} for e in ours.errors()]
        assert ours_errors == [{"type": e["type"], "loc": e["loc"]} for e in entry["pydantic_errors"]]
        return

    if error_name in MESSAGE_DIVERGENCES:
        assert re.search(MESSAGE_DIVERGENCES[error_name], message), message
        return
    # Same check fires (same message head), and whatever upstream names ('quoted' names, numbers) we name too.
    head = _message_head(entry["message"])
    assert message.startswith(head), f"ours: {message!r}\nupstream: {entry['message']!r}"
    for detail in re.findall(r"'[^']*'|\d+", entry["message"]):
        assert detail in message, f"upstream names {detail} but our message does not: {message!r}"


# ----------------------------------------------------------------------------------------------------------------------
# Observations recorded from upstream
# ----------------------------------------------------------------------------------------------------------------------


def observation(name: str) -> Any:
    observations = load_document()["observations"]
    assert name in observations, f"observation {name!r} missing from cases.json"
    return observations[name]


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {key: ("<required>" if field.is_required() else field.default) for key, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("config_defaults", AttentionConfig),
        ("multi_branch_config_defaults", MultiBranchAnchorAttentionConfig),
        ("rope_frequency_config_defaults", RopeFrequencyConfig),
        ("sincos_config_defaults", ContinuousSincosEmbeddingConfig),
    ],
)
def test_config_defaults_match_upstream(name: str, model: type[BaseModel]) -> None:
    assert_dump_matches_upstream(_defaults(model), observation(name), name)


def test_attention_config_dump_matches_upstream() -> None:
    expected = observation("attention_config_dump_example")
    assert_dump_matches_upstream(AttentionConfig(hidden_dim=32, num_heads=4).model_dump(), expected, "dump")


def test_token_spec_and_pattern_behaviour_matches_upstream() -> None:
    assert TokenSpec(name="surface_anchors", size=3).model_dump() == observation("token_spec_dump")
    assert TokenSpec(name="surface_anchors", size=None).model_dump() == observation("token_spec_none_dump")
    assert TokenSpec.from_dict({"volume_queries": 5}).model_dump() == observation("token_spec_from_dict")
    assert TokenSpec(name="volume_queries", size=5).to_dict() == observation("token_spec_to_dict")
    assert observation("attention_pattern_str_query_tokens")["accepted"] is False
    with pytest.raises(ValidationError):
        AttentionPattern(query_tokens="ab", key_value_tokens=["a"])
    pattern = AttentionPattern(query_tokens=("a", "b"), key_value_tokens=["a"])
    assert type(pattern.query_tokens).__name__ == observation("attention_pattern_tuple_kept_as")


def test_state_dict_layout_matches_upstream() -> None:
    torch.manual_seed(0)
    mixed = MixedAttention(MixedAttentionConfig(hidden_dim=32, num_heads=2))
    no_bias = MixedAttention(MixedAttentionConfig(hidden_dim=32, num_heads=2, bias=False))
    branches = SelfAnchorAttention(MultiBranchAnchorAttentionConfig(hidden_dim=32, num_heads=2, branches=["a", "b"]))
    assert list(mixed.state_dict()) == observation("mixed_state_dict_keys")
    assert list(no_bias.state_dict()) == observation("mixed_bias_false_state_dict_keys")
    assert list(branches.state_dict()) == observation("multi_branch_state_dict_keys")


def test_perceiver_layout_and_config_match_upstream() -> None:
    with_kv_dim = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=32, num_heads=2, kv_dim=24))
    no_bias = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=32, num_heads=2, bias=False))
    assert list(with_kv_dim.state_dict()) == observation("perceiver_state_dict_keys")
    assert list(no_bias.state_dict()) == observation("perceiver_bias_false_state_dict_keys")
    assert list(with_kv_dim.k.weight.shape) == observation("perceiver_k_weight_shape")
    dump = PerceiverAttentionConfig(hidden_dim=32, num_heads=2).model_dump()
    assert_dump_matches_upstream(dump, observation("perceiver_config_dump"), "perceiver config dump")
    assert schema_attention.PerceiverAttentionConfig is PerceiverAttentionConfig


def test_multi_branch_config_keeps_extra_fields_like_upstream() -> None:
    recorded = observation("multi_branch_extra_fields")
    config = MultiBranchAnchorAttentionConfig(
        hidden_dim=32, num_heads=2, branches=["surface", "volume"], **recorded["config_kwargs"]
    )
    dump = config.model_dump()
    assert {key: dump[key] for key in recorded["config_dump_keeps_extra"]} == recorded["config_dump_keeps_extra"]


def test_new_kv_cache_naming_matches_upstream() -> None:
    recorded = observation("new_kv_cache_naming")
    names = recorded["token_names"]
    module = MixedAttention(MixedAttentionConfig(hidden_dim=32, num_heads=2)).eval()
    with torch.no_grad():
        _, new_cache = module(
            torch.randn(2, 2 * len(names), 32),
            [TokenSpec(name=name, size=2) for name in names],
            [AttentionPattern(query_tokens=names, key_value_tokens=names)],
        )
    assert new_cache is not None
    assert list(new_cache) == recorded["cached_names"]


def test_custom_anchor_suffix_cache_matches_upstream() -> None:
    recorded = observation("multi_branch_custom_anchor_suffix_cache")
    module = SelfAnchorAttention(
        MultiBranchAnchorAttentionConfig(
            hidden_dim=32, num_heads=2, branches=["a", "b"], anchor_suffix=recorded["anchor_suffix"]
        )
    ).eval()
    names = recorded["token_names"]
    with torch.no_grad():
        _, new_cache = module(torch.randn(2, 2 * len(names), 32), [TokenSpec(name=n, size=2) for n in names])
    assert new_cache is not None
    assert list(new_cache) == recorded["new_kv_cache"]


def test_zero_size_group_matches_upstream() -> None:
    recorded = observation("zero_size_group")
    module = MixedAttention(MixedAttentionConfig(hidden_dim=32, num_heads=2)).eval()
    token_specs = [TokenSpec(name="x_anchors", size=3), TokenSpec(name="x_queries", size=0)]
    patterns = [AttentionPattern(query_tokens=["x_anchors", "x_queries"], key_value_tokens=["x_anchors"])]
    assert recorded["works"] is True
    with torch.no_grad():
        out, _ = module(torch.randn(2, 3, 32), token_specs, patterns)
    assert list(out.shape) == recorded["out_shape"]


def test_dtype_handling_matches_upstream() -> None:
    recorded = observation("dtype_handling")
    rope_frequency = RopeFrequency(RopeFrequencyConfig(hidden_dim=12, input_dim=3, implementation="complex"))
    embed = ContinuousSincosEmbed(ContinuousSincosEmbeddingConfig(hidden_dim=48, input_dim=3))
    coords64 = torch.rand(2, 4, 3, dtype=torch.float64)
    int_coords = torch.randint(0, 10, (2, 4, 3))
    assert str(rope_frequency(coords64).dtype) == recorded["rope_frequency_float64_coords"]
    assert str(rope_frequency(int_coords).dtype) == recorded["rope_frequency_int_coords"]
    assert str(embed(coords64).dtype) == recorded["sincos_float64_coords"]
    assert str(embed(int_coords).dtype) == recorded["sincos_int_coords"]
    x64 = torch.randn(2, 2, 4, 12, dtype=torch.float64)
    assert str(rope(x64, rope_frequency(coords64)).dtype) == recorded["rope_apply_float64_x"]


def test_rope_frequency_default_implementation_matches_upstream() -> None:
    recorded = observation("rope_frequency_default_implementation")
    module = RopeFrequency(RopeFrequencyConfig(hidden_dim=12, input_dim=3))
    assert module.implementation == recorded["implementation"]
    freqs = module(torch.rand(2, 4, 3))
    assert isinstance(freqs, tuple)
    assert recorded["returns"] == f"tuple of {len(freqs)} tensors shaped {list(freqs[0].shape)}"


def test_kv_cache_details_match_upstream() -> None:
    recorded = observation("kv_cache_details")
    torch.manual_seed(0)
    module = MixedAttention(MixedAttentionConfig(hidden_dim=32, num_heads=2)).eval()
    kv_cache = {name: {"k": torch.randn(2, 2, 3, 16), "v": torch.randn(2, 2, 3, 16)} for name in ("context", "unused")}
    x = torch.randn(2, 4, 32)
    patterns = [AttentionPattern(query_tokens=["context", "queries"], key_value_tokens=["context"])]
    with torch.no_grad():
        out_cached, cache_cached = module(
            x, [TokenSpec(name="context", size=None), TokenSpec(name="queries", size=4)], patterns, kv_cache=kv_cache
        )
        specs = [TokenSpec(name="a_anchors", size=2), TokenSpec(name="queries", size=2)]
        normal_patterns = [AttentionPattern(query_tokens=["a_anchors", "queries"], key_value_tokens=["a_anchors"])]
        out_plain, _ = module(x, specs, normal_patterns)
        out_with_cache, cache_with_cache = module(x, specs, normal_patterns, kv_cache=kv_cache)
    assert recorded["cached_group_without_anchor_in_name_works"] is (out_cached.shape == x.shape)
    assert cache_cached is recorded["cached_path_new_kv_cache"] is None
    assert recorded["kv_cache_ignored_without_cached_specs"] is torch.equal(out_plain, out_with_cache)
    assert cache_with_cache is not None
    assert list(cache_with_cache) == recorded["normal_path_with_kv_cache_still_returns_new_cache"]


def test_cached_path_rope_matches_upstream() -> None:
    recorded = observation("cached_path_rope")
    torch.manual_seed(0)
    module = MixedAttention(MixedAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True)).eval()
    specs = [TokenSpec(name="a_anchors", size=4), TokenSpec(name="a_queries", size=3)]
    patterns = [AttentionPattern(query_tokens=["a_anchors", "a_queries"], key_value_tokens=["a_anchors"])]
    x = torch.randn(2, 7, 32) * 2.0
    freqs = RopeFrequency(RopeFrequencyConfig(hidden_dim=16, input_dim=3, implementation="complex"))(
        torch.rand(2, 7, 3) * 100.0
    )
    cached_specs = [TokenSpec(name="a_anchors", size=None), TokenSpec(name="a_queries", size=3)]
    with torch.no_grad():
        full, kv_cache = module(x, specs, patterns, freqs=freqs)
        rotated, _ = module(x[:, 4:], cached_specs, patterns, freqs=freqs[:, 4:], kv_cache=kv_cache)
        identity, _ = module(x[:, 4:], cached_specs, patterns, freqs=torch.ones_like(freqs[:, 4:]), kv_cache=kv_cache)
    assert recorded["applies_rope_to_queries"] is not torch.allclose(rotated, identity)
    assert recorded["cached_equals_full_pass"] is torch.allclose(rotated, full[:, 4:], atol=1e-5)


def test_truncnormal_equals_truncnormal002_like_upstream() -> None:
    states = []
    for mode in ("truncnormal", "truncnormal002"):
        torch.manual_seed(0)
        config = DotProductAttentionConfig(hidden_dim=32, num_heads=4, init_weights=mode)
        states.append(DotProductAttention(config).state_dict())
    same = all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert same is observation("truncnormal_equals_truncnormal002")
