"""The manifest of a capture file (format version 1) as pydantic models, and the error every reader raises.

Extra keys are allowed everywhere: later recorders may add optional ones (the format only grows additively).
"""

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


def _check_tree(tree: Any, depth: int = 0) -> Any:
    """A cache as stored: nested maps of names whose leaves are tensor keys (``{group: {k, v}}`` or ``{k, v}``)."""
    if tree is None:
        return None
    if not isinstance(tree, dict) or depth > 4:
        raise ValueError("must be a map of names to tensor keys (at most 4 levels deep)")
    for name, item in tree.items():
        if isinstance(item, dict):
            _check_tree(item, depth + 1)
        elif not (isinstance(item, str) and 0 < len(item) <= 1000):
            raise ValueError(f"entry {name!r} must be a tensor key or a map, got {item!r:.60}")
    return tree


def tree_keys(tree: dict[str, Any] | None, label: str) -> Iterator[tuple[str, str]]:
    """(where, tensor key) for every leaf of a stored cache."""
    for name, item in (tree or {}).items():
        if isinstance(item, dict):
            yield from tree_keys(item, f"{label} '{name}'")
        else:
            yield f"{label} '{name}'", item


def group_caches(tree: dict[str, Any] | None) -> dict[str, CacheEntry] | None:
    """A cache as ``{group: CacheEntry}`` (the MixedAttention form), or None when it has another shape."""
    if not tree:
        return None
    if not all(isinstance(item, dict) and set(item) == {"k", "v"} for item in tree.values()):
        return None
    return {group: CacheEntry(**item) for group, item in tree.items()}


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
    kv_cache: dict[str, Any] | None = None
    """The incoming cache: ``{group: {"k": key, "v": key}}`` for mixed calls (other kinds may nest differently)."""
    output: Key | None = None
    new_kv_cache: dict[str, Any] | None = None

    @field_validator("kv_cache", "new_kv_cache")
    @classmethod
    def _cache_tree(cls, value: Any) -> Any:
        return _check_tree(value)

    def caches(self, which: str = "kv_cache") -> dict[str, CacheEntry]:
        """The incoming (or new) cache per group; empty when absent or not in the per-group form."""
        return group_caches(getattr(self, which)) or {}


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
