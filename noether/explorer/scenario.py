"""The scenario: the document people design, validate and export (attention config, groups, patterns, run).

The model lives in :mod:`scenario_model`, validation in :mod:`scenario_messages` (pydantic errors),
:mod:`scenario_sections` (each section) and :mod:`scenario_rules` (how they fit together); this module validates a
whole document and gives the canonical form, and re-exports the public names so that importers keep one place.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from noether.explorer.problems import Problem, did_you_mean, errors
from noether.explorer.scenario_model import (
    ANCHOR_CONFIGS,
    DEFAULT_CACHE_SIZE,
    MAX_GROUPS,
    MAX_TOTAL_TOKENS,
    MIN_WAVE_DIM,
    AttentionKind,
    DTypeName,
    InputMode,
    RunSettings,
    Scenario,
    ScenarioAttention,
    WeightsMode,
    perceiver_patterns,
)
from noether.explorer.scenario_rules import _pattern_problems, semantic_problems
from noether.explorer.scenario_sections import (
    SIZE_RULE,
    _bool_number_problems,
    _check_attention,
    _check_patterns,
    _check_run,
    _check_token_specs,
)

__all__ = [
    "ANCHOR_CONFIGS",
    "DEFAULT_CACHE_SIZE",
    "MAX_GROUPS",
    "MAX_TOTAL_TOKENS",
    "MIN_WAVE_DIM",
    "SIZE_RULE",
    "AttentionKind",
    "DTypeName",
    "InputMode",
    "RunSettings",
    "Scenario",
    "ScenarioAttention",
    "ScenarioReport",
    "WeightsMode",
    "perceiver_patterns",
    "scenario_to_dict",
    "semantic_problems",
    "validate_scenario",
]


# --------------------------------------------------------------------------------------------------------------------
# Validation: every problem at once, each naming the field or group and what to do.
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ScenarioReport:
    """Outcome of validating a document: the scenario when it has no errors, and every problem found."""

    scenario: Scenario | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.scenario is not None and not errors(self.problems)


_TOP_LEVEL = ("attention", "token_specs", "attention_patterns", "run")


def _declares_mixed(data: Mapping[str, Any]) -> bool:
    """The document asks for explicit rules (kind mixed, the default), however the rest of its attention fails."""
    attention = data.get("attention")
    return isinstance(attention, Mapping) and attention.get("kind", "mixed") == "mixed"


def validate_scenario(data: Any) -> ScenarioReport:
    """Validate a parsed document (a mapping) into a Scenario, collecting every problem at once."""
    if isinstance(data, Scenario):
        data = data.model_dump(exclude={"token_specs": {"__all__": {"domain", "attn_type"}}})
    if not isinstance(data, Mapping):
        return ScenarioReport(
            None,
            [
                Problem(
                    "(document)",
                    f"must be a mapping with keys {list(_TOP_LEVEL)}, got {type(data).__name__}.",
                    "Start the file with 'attention:'.",
                )
            ],
        )
    problems: list[Problem] = _bool_number_problems(data)
    for key in data:
        if key not in _TOP_LEVEL:
            problems.append(
                Problem(
                    str(key),
                    "is not a scenario key.",
                    (did_you_mean(str(key), _TOP_LEVEL) + f" Allowed: {list(_TOP_LEVEL)}.").strip(),
                )
            )
    for key in ("attention", "token_specs"):
        if key not in data:
            problems.append(Problem(key, "is missing.", "Add it; see the example scenarios."))
    attention, found = _check_attention(data["attention"]) if "attention" in data else (None, [])
    problems += found
    specs, found = _check_token_specs(data["token_specs"]) if "token_specs" in data else (None, [])
    problems += found
    patterns, found = _check_patterns(data.get("attention_patterns") or [])
    problems += found
    run, found = _check_run(data.get("run"))
    problems += found
    if attention is None and specs is not None and patterns and run is not None and _declares_mixed(data):
        # A bad attention section says nothing about the rules: report their problems in the same pass.
        problems += _pattern_problems(patterns, specs, run, "attention_patterns")
    if attention is None or specs is None or patterns is None or run is None:
        return ScenarioReport(None, problems)
    # The sections parsed; check how they fit together even if something unrelated (a typo'd key) failed.
    scenario = Scenario(attention=attention, token_specs=specs, attention_patterns=patterns, run=run)
    problems += semantic_problems(scenario)
    return ScenarioReport(None if errors(problems) else scenario, problems)


# --------------------------------------------------------------------------------------------------------------------
# Canonical form: the same scenario always gives the same mapping (stable key order), and it round-trips.
# --------------------------------------------------------------------------------------------------------------------

_ATTENTION_ORDER = ("kind", "hidden_dim", "num_heads", "use_rope", "qk_norm", "dropout", "bias", "init_weights")


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """Canonical mapping: fixed key order, derived fields (head_dim) left out, patterns made explicit."""
    attention = scenario.attention
    attention_dict: dict[str, Any] = {key: getattr(attention, key) for key in _ATTENTION_ORDER}
    attention_dict["dropout"] = float(attention.dropout)
    extra = attention.model_extra or {}
    for key in ("branches", "anchor_suffix"):
        if key in extra:
            attention_dict[key] = extra[key]
    for key in sorted(set(extra) - {"branches", "anchor_suffix"}):
        attention_dict[key] = extra[key]
    run = scenario.run
    return {
        "attention": attention_dict,
        "token_specs": [{"name": spec.name, "size": spec.size} for spec in scenario.token_specs],
        "attention_patterns": [
            {"query_tokens": list(p.query_tokens), "key_value_tokens": list(p.key_value_tokens)}
            for p in scenario.patterns()
        ],
        "run": {
            "seed": run.seed,
            "batch_size": run.batch_size,
            "device": run.device,
            "dtype": run.dtype,
            "inputs": run.inputs,
            "weights": run.weights,
            "kv_cache_sizes": dict(run.kv_cache_sizes),
            "padding": dict(run.padding),
        },
    }
