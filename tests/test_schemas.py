"""Tests of the attention schemas: AttentionConfig, TokenSpec, AttentionPattern and the concrete configs."""

import ast
import inspect
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import noether.core.schemas.modules.attention as schema_attention
import noether.modeling.modules.attention as modeling_attention
from noether.core.schemas.modules.attention import AttentionConfig, AttentionPattern, TokenSpec
from noether.core.schemas.modules.layers import ContinuousSincosEmbeddingConfig, RopeFrequencyConfig
from noether.modeling.modules.attention.anchor_attention import (
    CrossAnchorAttentionConfig,
    JointAnchorAttentionConfig,
    MultiBranchAnchorAttentionConfig,
    SelfAnchorAttentionConfig,
)

CONCRETE_CONFIG_NAMES = [
    "DotProductAttentionConfig",
    "MixedAttentionConfig",
    "MultiBranchAnchorAttentionConfig",
    "SelfAnchorAttentionConfig",
    "CrossAnchorAttentionConfig",
    "JointAnchorAttentionConfig",
]

DOCUMENTED_MODELS: list[type[BaseModel]] = [
    AttentionConfig,
    TokenSpec,
    AttentionPattern,
    RopeFrequencyConfig,
    ContinuousSincosEmbeddingConfig,
    *(getattr(modeling_attention, name) for name in CONCRETE_CONFIG_NAMES),
]


# ----------------------------------------------------------------------------------------------------------------------
# AttentionConfig
# ----------------------------------------------------------------------------------------------------------------------


def test_attention_config_defaults() -> None:
    config = AttentionConfig(hidden_dim=64, num_heads=4)
    assert config.use_rope is False
    assert config.dropout == 0.0
    assert config.init_weights == "truncnormal002"
    assert config.bias is True
    assert config.qk_norm is False
    assert config.head_dim == 16


@pytest.mark.parametrize("given_head_dim", [None, 7, 16, 1000])
def test_head_dim_is_derived_and_overwrites_given_value(given_head_dim: int | None) -> None:
    config = AttentionConfig(hidden_dim=48, num_heads=3, head_dim=given_head_dim)
    assert config.head_dim == 16


def test_extra_fields_are_allowed_and_kept() -> None:
    config = AttentionConfig(hidden_dim=8, num_heads=2, my_custom_setting="abc", branches=["a"])
    assert config.my_custom_setting == "abc"  # type: ignore[attr-defined]
    dump = config.model_dump()
    assert dump["my_custom_setting"] == "abc"
    assert dump["branches"] == ["a"]
    # extras survive the conversion the modules do (Config(**other.model_dump())).
    assert MultiBranchAnchorAttentionConfig(**dump).branches == ["a"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_dim", 0),
        ("hidden_dim", -4),
        ("num_heads", 0),
        ("num_heads", -1),
        ("dropout", -0.01),
        ("dropout", 1.01),
    ],
)
def test_out_of_bounds_values_are_rejected(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {"hidden_dim": 8, "num_heads": 2, field: value}
    with pytest.raises(ValidationError, match=field):
        AttentionConfig(**kwargs)


@pytest.mark.parametrize("dropout", [0.0, 0.5, 1.0])
def test_dropout_bounds_are_inclusive(dropout: float) -> None:
    assert AttentionConfig(hidden_dim=8, num_heads=2, dropout=dropout).dropout == dropout


def test_minimal_dims_are_accepted() -> None:
    config = AttentionConfig(hidden_dim=1, num_heads=1)
    assert config.head_dim == 1


@pytest.mark.parametrize(
    "mode", ["truncnormal002", "torch", "truncnormal", "truncnormal002-identity", "torchs", "zeros"]
)
def test_known_init_modes_are_accepted_by_the_schema(mode: str) -> None:
    assert AttentionConfig(hidden_dim=8, num_heads=2, init_weights=mode).init_weights == mode


@pytest.mark.parametrize("mode", ["xavier", "", "TRUNCNORMAL002", "truncnormal02"])
def test_unknown_init_mode_is_rejected(mode: str) -> None:
    with pytest.raises(ValidationError, match="init_weights"):
        AttentionConfig(hidden_dim=8, num_heads=2, init_weights=mode)


def test_non_divisible_hidden_dim_is_rejected_naming_both_fields() -> None:
    with pytest.raises(ValidationError) as excinfo:
        AttentionConfig(hidden_dim=10, num_heads=3)
    message = str(excinfo.value)
    assert "hidden_dim" in message
    assert "num_heads" in message


@pytest.mark.parametrize("config_cls_name", CONCRETE_CONFIG_NAMES)
def test_concrete_configs_also_reject_non_divisible_dims(config_cls_name: str) -> None:
    config_cls = getattr(modeling_attention, config_cls_name)
    with pytest.raises(ValidationError, match="num_heads"):
        config_cls(hidden_dim=10, num_heads=4, branches=["surface", "volume"])


@given(num_heads=st.integers(1, 64), multiplier=st.integers(1, 64), use_rope=st.booleans(), qk_norm=st.booleans())
def test_model_dump_round_trip_is_identity(num_heads: int, multiplier: int, use_rope: bool, qk_norm: bool) -> None:
    config = AttentionConfig(hidden_dim=num_heads * multiplier, num_heads=num_heads, use_rope=use_rope, qk_norm=qk_norm)
    rebuilt = AttentionConfig(**config.model_dump())
    assert rebuilt == config
    assert rebuilt.model_dump() == config.model_dump()


@given(hidden_dim=st.integers(1, 512), num_heads=st.integers(1, 64))
def test_validation_succeeds_iff_hidden_dim_divisible_by_num_heads(hidden_dim: int, num_heads: int) -> None:
    divisible = hidden_dim % num_heads == 0
    try:
        config = AttentionConfig(hidden_dim=hidden_dim, num_heads=num_heads)
    except ValidationError:
        assert not divisible
    else:
        assert divisible
        assert config.head_dim == hidden_dim // num_heads


# ----------------------------------------------------------------------------------------------------------------------
# Field docstrings
# ----------------------------------------------------------------------------------------------------------------------


def _field_docstrings(model: type[BaseModel]) -> tuple[set[str], set[str]]:
    """(documented, undocumented) annotated fields declared in the class body of ``model`` itself.

    A field counts as documented when its annotated assignment is directly followed by a string expression.
    """
    class_def = ast.parse(textwrap.dedent(inspect.getsource(model))).body[0]
    assert isinstance(class_def, ast.ClassDef)
    documented: set[str] = set()
    undocumented: set[str] = set()
    body = class_def.body
    for index, statement in enumerate(body):
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        following = body[index + 1] if index + 1 < len(body) else None
        has_doc = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
            and following.value.value.strip() != ""
        )
        (documented if has_doc else undocumented).add(statement.target.id)
    return documented, undocumented


@pytest.mark.parametrize("model", DOCUMENTED_MODELS, ids=lambda model: model.__name__)
def test_every_field_has_an_attribute_docstring(model: type[BaseModel]) -> None:
    documented: set[str] = set()
    for klass in model.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        own_documented, own_undocumented = _field_docstrings(klass)
        assert not own_undocumented, f"{klass.__name__} fields without a docstring: {sorted(own_undocumented)}"
        documented |= own_documented
    missing = set(model.model_fields) - documented
    assert not missing, f"{model.__name__} fields not declared with a docstring in its class hierarchy: {missing}"
    assert model.__doc__ and model.__doc__.strip()


def test_docstring_checker_detects_a_missing_docstring() -> None:
    class Undocumented(BaseModel):
        documented: int = 1
        """Has one."""

        bare: int = 2

    assert _field_docstrings(Undocumented) == ({"documented"}, {"bare"})


# ----------------------------------------------------------------------------------------------------------------------
# TokenSpec
# ----------------------------------------------------------------------------------------------------------------------


def test_token_spec_size_none_is_allowed() -> None:
    spec = TokenSpec(name="surface_anchors", size=None)
    assert spec.size is None
    assert spec.to_dict() == {"surface_anchors": None}


def test_token_spec_size_zero_is_allowed() -> None:
    assert TokenSpec(name="empty", size=0).size == 0


def test_token_spec_negative_size_is_rejected() -> None:
    with pytest.raises(ValidationError, match="size"):
        TokenSpec(name="surface_anchors", size=-1)


def test_token_spec_size_is_required() -> None:
    with pytest.raises(ValidationError, match="size"):
        TokenSpec(name="surface_anchors")  # type: ignore[call-arg]


@pytest.mark.parametrize("token_dict", [{}, {"surface_anchors": 3, "volume_anchors": 4}])
def test_token_spec_from_dict_requires_exactly_one_pair(token_dict: dict[str, int | None]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TokenSpec.from_dict(token_dict)


def test_token_spec_from_dict_and_to_dict() -> None:
    spec = TokenSpec.from_dict({"volume_queries": 12})
    assert spec == TokenSpec(name="volume_queries", size=12)
    assert spec.to_dict() == {"volume_queries": 12}
    assert TokenSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("name", "domain", "attn_type"),
    [
        ("surface_anchors", "surface", "anchors"),
        ("volume_queries", "volume", "queries"),
        ("surface_extra_queries", "surface", "queries"),
        ("volume", "volume", "volume"),
    ],
)
def test_token_spec_domain_and_attn_type(name: str, domain: str, attn_type: str) -> None:
    spec = TokenSpec(name=name, size=1)
    assert spec.domain == domain
    assert spec.attn_type == attn_type
    dump = spec.model_dump()
    assert dump["domain"] == domain
    assert dump["attn_type"] == attn_type


@given(name=st.text(), size=st.none() | st.integers(min_value=0))
def test_token_spec_dict_round_trip(name: str, size: int | None) -> None:
    spec = TokenSpec(name=name, size=size)
    rebuilt = TokenSpec.from_dict(spec.to_dict())
    assert rebuilt == spec
    assert rebuilt.name == name
    assert rebuilt.size == size


# ----------------------------------------------------------------------------------------------------------------------
# AttentionPattern
# ----------------------------------------------------------------------------------------------------------------------


def test_attention_pattern_accepts_sequences() -> None:
    pattern = AttentionPattern(query_tokens=("a", "b"), key_value_tokens=["a"])
    assert list(pattern.query_tokens) == ["a", "b"]
    assert list(pattern.key_value_tokens) == ["a"]


@pytest.mark.parametrize("field", ["query_tokens", "key_value_tokens"])
def test_attention_pattern_rejects_a_bare_string(field: str) -> None:
    kwargs: dict[str, Any] = {"query_tokens": ["a"], "key_value_tokens": ["a"], field: "surface_anchors"}
    with pytest.raises(ValidationError, match=field):
        AttentionPattern(**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Concrete configs and imports
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONCRETE_CONFIG_NAMES)
def test_concrete_configs_are_the_same_class_in_both_modules(name: str) -> None:
    from_schema = getattr(schema_attention, name)
    from_modeling = getattr(modeling_attention, name)
    assert from_schema is from_modeling
    assert issubclass(from_schema, AttentionConfig)
    assert name in schema_attention.__all__
    assert name in dir(schema_attention)


def test_concrete_configs_importable_with_from_import() -> None:
    from noether.core.schemas.modules.attention import (
        CrossAnchorAttentionConfig as SchemaCross,
    )
    from noether.core.schemas.modules.attention import (
        MixedAttentionConfig as SchemaMixed,
    )
    from noether.modeling.modules.attention import MixedAttentionConfig

    assert SchemaCross is CrossAnchorAttentionConfig
    assert SchemaMixed is MixedAttentionConfig


def test_unknown_attribute_of_schema_module_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchConfig"):
        _ = schema_attention.NoSuchConfig  # type: ignore[attr-defined]


def test_base_schemas_import_in_a_fresh_interpreter_without_torch() -> None:
    code = (
        "import sys\n"
        "from noether.core.schemas.modules.attention import AttentionConfig, TokenSpec, AttentionPattern\n"
        "assert AttentionConfig(hidden_dim=4, num_heads=2).head_dim == 2\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # The schemas are pure data: importing them must not drag in torch.
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "config_cls", [MultiBranchAnchorAttentionConfig, SelfAnchorAttentionConfig, CrossAnchorAttentionConfig]
)
def test_multi_branch_config_requires_at_least_one_branch(config_cls: type[MultiBranchAnchorAttentionConfig]) -> None:
    with pytest.raises(ValidationError, match="branches"):
        config_cls(hidden_dim=8, num_heads=2, branches=[])
    with pytest.raises(ValidationError, match="branches"):
        config_cls(hidden_dim=8, num_heads=2)  # type: ignore[call-arg]


def test_multi_branch_config_defaults() -> None:
    config = JointAnchorAttentionConfig(hidden_dim=8, num_heads=2, branches=["surface", "volume"])
    assert config.anchor_suffix == "_anchors"
    assert config.branches == ["surface", "volume"]
    assert config.head_dim == 4
    assert config.init_weights == "truncnormal002"
