"""Writing scenarios: canonical JSON and YAML, the JSON Schema of a scenario file and the upstream payload."""

import json
from typing import Any

import yaml

from noether.explorer.scenario import ANCHOR_CONFIGS, Scenario, scenario_to_dict


def dump_json(scenario: Scenario) -> str:
    """Canonical JSON: the scenario_to_dict mapping, indent 2, UTF-8 text, trailing newline."""
    return json.dumps(scenario_to_dict(scenario), indent=2, ensure_ascii=False) + "\n"


class FlowMap(dict):
    """A mapping written on one line ({name: a, size: 3})."""


class FlowList(list):
    """A list written on one line ([a, b])."""


class _ScenarioDumper(yaml.SafeDumper):
    """SafeDumper that writes token specs and group lists in flow style and never emits anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # PyYAML may write NEL and the Unicode line/paragraph separators raw in plain or single-quoted style, where the
    # reader turns them into "\n"; double quotes escape them (\N, \L, \P) and keep the text exact.
    style = '"' if any(char in "\x85\u2028\u2029" for char in data) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_ScenarioDumper.add_representer(str, _represent_str)
_ScenarioDumper.add_representer(
    FlowMap, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)
_ScenarioDumper.add_representer(
    FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def dump_yaml(scenario: Scenario) -> str:
    """Canonical YAML (safe types only, stable key order); token specs and pattern lists in flow style."""
    data = scenario_to_dict(scenario)
    data["token_specs"] = [FlowMap(item) for item in data["token_specs"]]
    data["attention_patterns"] = [
        {key: FlowList(names) for key, names in pattern.items()} for pattern in data["attention_patterns"]
    ]
    return yaml_text(data)


def yaml_text(data: Any) -> str:
    """Plain data as YAML in document order: FlowMap and FlowList values on one line, no anchors, text kept exact."""
    return yaml.dump(
        data, Dumper=_ScenarioDumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120
    )


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of a scenario file; token_specs items may be {name: size} or {name: ..., size: ...}."""
    schema = Scenario.model_json_schema()
    token_specs = schema["properties"]["token_specs"]
    explicit = token_specs["items"]
    token_specs["items"] = {
        "anyOf": [
            explicit,
            {
                "type": "object",
                "description": "Shorthand {name: size}; size null = cached group.",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
            },
        ]
    }
    # validate_scenario reads an empty `run:` or `attention_patterns:` (null) as the default.
    for key in ("attention_patterns", "run"):
        schema["properties"][key] = {"anyOf": [schema["properties"][key], {"type": "null"}]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _config_class_name(scenario: Scenario) -> str:
    kind = scenario.attention.kind
    if kind == "perceiver":
        return "PerceiverAttentionConfig"
    return "MixedAttentionConfig" if kind == "mixed" else ANCHOR_CONFIGS[kind].__name__


def _module_class_name(scenario: Scenario) -> str:
    return _config_class_name(scenario).removesuffix("Config")


def _config_kwargs(scenario: Scenario) -> dict[str, Any]:
    attention = scenario_to_dict(scenario)["attention"]
    attention.pop("kind")
    return attention


def upstream_payload(scenario: Scenario) -> dict[str, Any]:
    """What upstream Noether takes: TokenSpec(**item), AttentionPattern(**item) and <config_class>(**attention).

    For anchor kinds the patterns are the ones the module generates (the module itself takes only token_specs).
    """
    data = scenario_to_dict(scenario)
    return {
        "config_class": _config_class_name(scenario),
        "module_class": _module_class_name(scenario),
        "attention": _config_kwargs(scenario),
        "token_specs": data["token_specs"],
        "attention_patterns": data["attention_patterns"],
    }
