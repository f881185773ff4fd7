"""Built-in example scenarios (the YAML files shipped in the package's assets/examples), with titles for pickers."""

from dataclasses import dataclass
from pathlib import Path

import yaml

from noether.explorer.problems import ExplorerError
from noether.explorer.resources import examples_dir
from noether.explorer.scenario import Scenario, validate_scenario

EXAMPLES_DIR = examples_dir()


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    file: str


PRESETS = (
    Preset("self_anchor", "Self-anchor attention (two branches)", "self_anchor.yaml"),
    Preset("cross_anchor", "Cross-anchor attention (two branches)", "cross_anchor.yaml"),
    Preset("joint_anchor", "Joint-anchor attention (two branches)", "joint_anchor.yaml"),
    Preset("full_self_attention", "Full self-attention", "full_self_attention.yaml"),
    Preset("perceiver", "Perceiver-style: queries read latents", "perceiver.yaml"),
    Preset("block_causal", "Block-causal (six chunks)", "block_causal.yaml"),
    Preset("kv_cache", "KV-cache inference (cached anchors)", "kv_cache.yaml"),
    Preset("abupt_sized", "AB-UPT-sized on the car point cloud (98k tokens)", "abupt_sized.yaml"),
)
DEFAULT_PRESET = "self_anchor"


def preset_path(key: str) -> Path:
    for preset in PRESETS:
        if preset.key == key:
            return EXAMPLES_DIR / preset.file
    raise KeyError(f"unknown preset '{key}'; known: {[p.key for p in PRESETS]}")


def preset_text(key: str) -> str:
    return preset_path(key).read_text(encoding="utf-8")


def preset_description(key: str) -> str:
    """The leading comment of the preset's file."""
    lines = [line[1:].strip() for line in preset_text(key).splitlines() if line.startswith("#")]
    return " ".join(lines)


def load_preset(key: str) -> Scenario:
    report = validate_scenario(yaml.safe_load(preset_text(key)))
    if report.scenario is None:
        raise ExplorerError(report.problems)
    return report.scenario
