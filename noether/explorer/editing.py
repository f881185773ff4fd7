"""The draft being edited in the app, and its edits, free of Streamlit so that it can be unit-tested.

The app keeps the document being edited (the "draft") as a plain mapping that may be invalid in any way: the user's
edits are never thrown away because they do not validate. Every function here takes and returns such mappings (new
copies, never mutated in place) and never raises on bad content; validation itself is
:func:`noether.explorer.scenario.validate_scenario`.

The functions live in modules by concern: the draft itself (:mod:`~noether.explorer.editing_draft`), the groups
table (:mod:`~noether.explorer.editing_groups`), rules, kinds and branches (:mod:`~noether.explorer.editing_rules`)
and problems in the editors' words (:mod:`~noether.explorer.editing_problems`). This module re-exports them all, so
that ``from noether.explorer import editing as ed`` reaches every one, and keeps the cache keys and the coercions
for widgets.
"""

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, get_args

from noether.core.types import SUPPORTED_INIT_MODES
from noether.explorer.editing_draft import (
    ATTENTION_DEFAULTS,
    Draft,
    ParsedText,
    draft_from_scenario,
    draft_to_text,
    empty_draft,
    parse_text,
    preset_draft,
    remove_value,
    section,
    set_value,
)
from noether.explorer.editing_groups import (
    COLUMN_CACHED,
    COLUMN_NAME,
    COLUMN_TOKENS,
    GroupRow,
    _is_number,
    apply_table_delta,
    detect_rename,
    forget_groups,
    group_names,
    group_rows,
    move_group,
    parse_tokens,
    removed_names,
    rename_groups,
    rows_to_token_specs,
    set_rows,
    table_frame,
    table_records,
    tokens_text,
    update_groups,
)
from noether.explorer.editing_groups import _apply_cells as _apply_cells  # edits.py applies cells row by row
from noether.explorer.editing_problems import (
    Section,
    describe_location,
    escape_markdown,
    problem_index,
    problem_markdown,
    problem_section,
    problems_by_section,
)
from noether.explorer.editing_rules import (
    DEFAULT_ANCHOR_SUFFIX,
    KIND_LABELS,
    KINDS,
    RulePair,
    add_branch_groups,
    add_rule,
    branches_of,
    compose_draft,
    generated_rules,
    infer_branches,
    parse_branches,
    remove_rule,
    rule_pairs,
    set_kind,
    set_rule,
    uncovered_groups,
)
from noether.explorer.scenario import DTypeName, Scenario, scenario_to_dict

__all__ = [
    "ATTENTION_DEFAULTS",
    "COLUMN_CACHED",
    "COLUMN_NAME",
    "COLUMN_TOKENS",
    "DEFAULT_ANCHOR_SUFFIX",
    "DTYPES",
    "INIT_MODES",
    "JS_MAX_SAFE_INTEGER",
    "KINDS",
    "KIND_LABELS",
    "Draft",
    "GroupRow",
    "ParsedText",
    "RulePair",
    "Section",
    "add_branch_groups",
    "add_rule",
    "apply_table_delta",
    "as_bool",
    "as_float",
    "as_int",
    "branches_of",
    "choice",
    "compose_draft",
    "describe_location",
    "detect_rename",
    "digest",
    "draft_from_scenario",
    "draft_to_text",
    "empty_draft",
    "escape_markdown",
    "forget_groups",
    "generated_rules",
    "group_names",
    "group_rows",
    "infer_branches",
    "move_group",
    "parse_branches",
    "parse_text",
    "parse_tokens",
    "preset_draft",
    "problem_index",
    "problem_markdown",
    "problem_section",
    "problems_by_section",
    "remove_rule",
    "remove_value",
    "removed_names",
    "rename_groups",
    "rows_to_token_specs",
    "rule_pairs",
    "run_cache_key",
    "scenario_key",
    "section",
    "set_kind",
    "set_rows",
    "set_rule",
    "set_value",
    "table_frame",
    "table_records",
    "tokens_text",
    "uncovered_groups",
    "update_groups",
]

DTYPES: tuple[str, ...] = get_args(DTypeName)
INIT_MODES = tuple(SUPPORTED_INIT_MODES)


# --------------------------------------------------------------------------------------------------------------------
# Cache keys: what identifies a scenario, an uploaded file, a prepared run
# --------------------------------------------------------------------------------------------------------------------


def scenario_key(scenario: Scenario) -> str:
    """Compact canonical JSON: equal for equal scenarios, so it keys caches of runs and figures."""
    return json.dumps(scenario_to_dict(scenario), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def run_cache_key(
    scenario: Scenario,
    *,
    weights_digest: str = "",
    weights_prefix: str = "",
    cloud_digest: str = "",
    memory_budget_mb: float = 0.0,
) -> str:
    """What identifies a prepared run: the scenario, the trained weights, the point cloud (only when point-cloud
    inputs use it) and the memory budget."""
    cloud = cloud_digest if scenario.run.inputs == "point_cloud" else ""
    return "|".join((scenario_key(scenario), weights_digest, weights_prefix, cloud, f"{memory_budget_mb:g}"))


# --------------------------------------------------------------------------------------------------------------------
# Small coercions for widgets showing values of a draft that may be invalid
# --------------------------------------------------------------------------------------------------------------------


JS_MAX_SAFE_INTEGER = 2**53 - 1
"""Number widgets refuse values beyond what JavaScript represents exactly."""


def as_int(value: Any, default: int) -> int:
    """An int to show in a number widget (the draft may hold anything, e.g. 1e30 typed into the text)."""
    if isinstance(value, bool) or not _is_number(value):
        return default
    try:
        result = int(value)
    except (OverflowError, ValueError):
        return default
    return result if abs(result) <= JS_MAX_SAFE_INTEGER else default


def as_float(value: Any, default: float) -> float:
    if isinstance(value, bool) or not _is_number(value):
        return default
    try:
        result = float(value)
    except OverflowError:
        return default
    return result if math.isfinite(result) else default


def as_bool(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def choice(value: Any, options: Sequence[Any], default: Any) -> Any:
    """``value`` if it is one of ``options`` (compared as given), else ``default``."""
    return value if any(value == option and type(value) is type(option) for option in options) else default
