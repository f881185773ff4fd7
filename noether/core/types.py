"""Small shared type aliases (same names and values as upstream Noether)."""

from typing import Literal

InitWeightsMode = Literal["truncnormal002", "torch", "truncnormal", "truncnormal002-identity", "torchs", "zeros"]
"""Weight initialisation strategies a config may name."""

SUPPORTED_INIT_MODES = ("torch", "truncnormal", "truncnormal002", "truncnormal002-identity")
"""The modes the attention modules implement (the others are accepted by the config, refused by the module)."""
