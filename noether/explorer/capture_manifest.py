"""The manifest of a capture file (format version 1) as pydantic models, and the error every reader raises.

Extra keys are allowed everywhere: later recorders may add optional ones (the format only grows additively).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from noether.explorer.problems import ExplorerError, Problem

MAX_CALLS = 10_000
"""Recorded calls per capture; a model with more attention calls is recorded with ``layers=`` filtering."""
REMAKE = "Record the capture again with capture_attention(...).save(path)."


class CaptureError(ExplorerError):
    """A capture file that cannot be used; its problems name the entry and what to do."""


def fail(where: str, message: str, hint: str = REMAKE) -> CaptureError:
    return CaptureError(Problem(where, message, hint))


Key = Annotated[str, Field(min_length=1, max_length=1000)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)


class ModuleEntry(_Open):
    """One recorded module; its parameters are stored once however often it was called."""

    class_name: str
    """``type(module).__name__`` as the recorder saw it."""
    kind: str
    """mixed | dot_product | perceiver | untied_mixed | ..."""
    explorable: bool = True
    """False for kinds the explorer cannot recompute."""
    config: dict[str, Any] = Field(default_factory=dict)
    """hidden_dim, num_heads, use_rope, bias, qk_norm (where present)."""
    parameters: dict[str, Key] = Field(default_factory=dict)
    """state_dict key -> tensor key."""


class CacheEntry(_Open):
    """Keys and values of one cached token group."""

    k: Key
    v: Key


class CallEntry(_Open):
    """One call of a recorded module, in call order."""

    id: Key
    """Module path + '#' + call index."""
    module: str
    """Path from named_modules() ("" for the root)."""
    call_index: int = Field(ge=0)
    kind: str
    inputs: dict[str, Key | None] = Field(default_factory=dict)
    """Argument name -> tensor key, or null when the argument was None."""
    token_specs: list[dict[str, Any]] | None = None
    attention_patterns: list[dict[str, Any]] | None = None
    kv_cache: dict[str, CacheEntry] | None = None
    """The incoming cache, per group."""
    output: Key | None = None
    new_kv_cache: dict[str, CacheEntry] | None = None


class NotExplorableEntry(_Open):
    id: str
    class_name: str = ""
    reason: str = ""


class Manifest(_Open):
    """The JSON manifest of a capture (format version 1)."""

    format: Literal["noether-attention-capture"]
    format_version: Literal[1]
    torch_version: str | None = None
    activations_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    modules: dict[str, ModuleEntry]
    calls: list[CallEntry] = Field(max_length=MAX_CALLS)
    positions: dict[str, Key] = Field(default_factory=dict)
    """Point coordinates per token group, (tokens, d) or (batch, tokens, d)."""
    complex_tensors: list[Key] = Field(default_factory=list)
    not_explorable: list[NotExplorableEntry] = Field(default_factory=list)
