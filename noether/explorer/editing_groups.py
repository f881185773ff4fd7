"""The token groups of a draft as rows of the groups table, and the table's edits back into the draft.

Part of :mod:`noether.explorer.editing`, which re-exports everything here.
"""

import copy
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from noether.explorer.editing_draft import Draft, section
from noether.explorer.scenario import DEFAULT_CACHE_SIZE

# --------------------------------------------------------------------------------------------------------------------
# Token groups <-> table rows
# --------------------------------------------------------------------------------------------------------------------

COLUMN_NAME, COLUMN_TOKENS, COLUMN_CACHED = "name", "tokens", "from KV cache"


@dataclass(frozen=True)
class GroupRow:
    """One row of the groups table.

    ``tokens`` is the group's size, or for a cached group the number of cached tokens simulated
    (``run.kv_cache_sizes``), so that one column says how long every group is on the key axis.
    """

    name: str
    tokens: int | float | str | None
    """A number, or the text typed into the cell when it is not one (kept so that validation can explain it)."""
    cached: bool = False


_MISSING = object()


def _spec_parts(item: Any) -> tuple[Any, Any] | None:
    """(name, size) of a token_specs item in either form (the same rule the scenario schema uses), or None."""
    if isinstance(item, Mapping) and "name" in item and (len(item) > 1 or isinstance(item["name"], str)):
        return item.get("name"), item.get("size", _MISSING)
    if isinstance(item, Mapping) and len(item) == 1:
        return next(iter(item.items()))
    return None


def group_rows(draft: Mapping[str, Any]) -> list[GroupRow] | None:
    """The token groups as table rows, or None when token_specs cannot be shown as a table (fix it as text)."""
    specs = draft.get("token_specs", [])
    if specs is None:
        return []
    if not isinstance(specs, list):
        return None
    cache_sizes = section(section(draft, "run"), "kv_cache_sizes")
    rows = []
    for item in specs:
        parts = _spec_parts(item)
        if parts is None:
            return None
        name, size = parts
        if not isinstance(name, str):
            return None
        if size is None:
            tokens = cache_sizes.get(name, DEFAULT_CACHE_SIZE)
            rows.append(GroupRow(name, tokens if _is_number(tokens) or isinstance(tokens, str) else None, True))
        elif size is _MISSING:
            rows.append(GroupRow(name, None, False))
        elif _is_number(size) or isinstance(size, str):
            rows.append(GroupRow(name, size, False))
        else:
            return None
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_records(rows: Sequence[GroupRow]) -> list[dict[str, Any]]:
    """Rows in the data editor's column layout."""
    return [{COLUMN_NAME: r.name, COLUMN_TOKENS: r.tokens, COLUMN_CACHED: r.cached} for r in rows]


def table_frame(rows: Sequence[GroupRow]) -> pd.DataFrame:
    """The groups table with fixed column types, so that an empty table still edits text, whole numbers, booleans."""
    return pd.DataFrame(
        {
            COLUMN_NAME: pd.Series([r.name for r in rows], dtype="string"),
            COLUMN_TOKENS: pd.Series([tokens_text(r.tokens) for r in rows], dtype="string"),
            COLUMN_CACHED: pd.Series([r.cached for r in rows], dtype="bool"),
        }
    )


def _clean_name(value: Any) -> str:
    return "" if value is None else str(value).strip()


def tokens_text(tokens: int | float | str | None) -> str | None:
    """A size as the tokens cell shows it: whole numbers without a decimal point, typed text as typed."""
    if tokens is None or isinstance(tokens, str):
        return tokens
    if isinstance(tokens, float) and tokens.is_integer():
        return str(int(tokens))
    return str(tokens)


def parse_tokens(value: Any) -> int | float | str | None:
    """The size typed into a tokens cell, never rewritten: a number when the text is one, else the text itself.

    "2048", "2_048" and "1e5" are numbers (whole ones become ints); "-5" stays -5 and "abc" stays "abc", so that
    validation names the value and says what sizes may be instead of the cell silently changing it.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        for number in (int, float):
            try:
                parsed = number(text)
            except (ValueError, OverflowError):
                continue
            return _whole(parsed) if math.isfinite(parsed) else text
        return text
    if not _is_number(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _whole(value)


def _whole(value: int | float) -> int | float:
    # Whole numbers become ints; others stay floats so that validation names them.
    return int(value) if float(value).is_integer() else float(value)


def _clean_tokens(value: Any) -> int | float | str | None:
    return parse_tokens(value)


def _apply_cells(row: GroupRow, cells: Mapping[str, Any]) -> GroupRow:
    name, tokens, cached = row.name, row.tokens, row.cached
    if COLUMN_NAME in cells:
        name = _clean_name(cells[COLUMN_NAME])
    if COLUMN_TOKENS in cells:
        tokens = _clean_tokens(cells[COLUMN_TOKENS])
    if COLUMN_CACHED in cells:
        cached = bool(cells[COLUMN_CACHED])
    return GroupRow(name, tokens, cached)


def apply_table_delta(rows: Sequence[GroupRow], delta: Mapping[str, Any]) -> list[GroupRow]:
    """Apply ``st.data_editor``'s edit state (edited_rows, deleted_rows, added_rows) to the rows it started from.

    Same order as Streamlit: cell edits by position, then deletions by position, then additions at the end.
    """
    result = list(rows)
    for position, cells in (delta.get("edited_rows") or {}).items():
        index = int(position)
        if 0 <= index < len(result) and isinstance(cells, Mapping):
            result[index] = _apply_cells(result[index], cells)
    deleted = {int(i) for i in delta.get("deleted_rows") or []}
    result = [row for index, row in enumerate(result) if index not in deleted]
    for cells in delta.get("added_rows") or []:
        if isinstance(cells, Mapping):
            result.append(_apply_cells(GroupRow("", None, False), cells))
    return result


def rows_to_token_specs(rows: Sequence[GroupRow]) -> list[dict[str, Any]]:
    """token_specs items: cached rows get size null; a row without tokens gets no size (validation asks for one)."""
    specs: list[dict[str, Any]] = []
    for row in rows:
        if row.cached:
            specs.append({"name": row.name, "size": None})
        elif row.tokens is None:
            specs.append({"name": row.name})
        else:
            specs.append({"name": row.name, "size": row.tokens})
    return specs


def detect_rename(old: Sequence[str], new: Sequence[str]) -> dict[str, str]:
    """{old: new} when exactly one group changed its name in place (the same rows otherwise), else {}."""
    if len(old) != len(new):
        return {}
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    if len(changed) != 1:
        return {}
    before, after = changed[0]
    if not before or not after or Counter(old)[before] != 1 or after in old:
        return {}
    return {before: after}


def removed_names(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """Names whose every row disappeared."""
    remaining = set(new)
    return [name for name in dict.fromkeys(old) if name and name not in remaining]


def _map_rule_lists(draft: Draft, change: Any) -> Draft:
    patterns = draft.get("attention_patterns")
    if not isinstance(patterns, list):
        return draft
    kept = []
    for pattern in patterns:
        if not isinstance(pattern, dict):
            kept.append(pattern)
            continue
        updated = dict(pattern)
        for field_name in ("query_tokens", "key_value_tokens"):
            names = pattern.get(field_name)
            if isinstance(names, list):
                updated[field_name] = change(names)
        # A rule whose query groups were all removed has nothing left to say.
        if pattern.get("query_tokens") and updated.get("query_tokens") == []:
            continue
        kept.append(updated)
    draft["attention_patterns"] = kept
    return draft


def _map_run_entries(draft: Draft, change: Any) -> Draft:
    run = draft.get("run")
    if not isinstance(run, dict):
        return draft
    for field_name in ("kv_cache_sizes", "padding"):
        entries = run.get(field_name)
        if isinstance(entries, dict):
            run[field_name] = change(entries)
    return draft


def rename_groups(draft: Mapping[str, Any], renames: Mapping[str, str]) -> Draft:
    """Follow group renames in the rules, cache sizes and padding."""
    result = copy.deepcopy(dict(draft))
    if not renames:
        return result
    result = _map_rule_lists(result, lambda names: [renames.get(n, n) if isinstance(n, str) else n for n in names])
    return _map_run_entries(result, lambda entries: {renames.get(k, k): v for k, v in entries.items()})


def forget_groups(draft: Mapping[str, Any], names: Sequence[str]) -> Draft:
    """Remove deleted groups from the rules (dropping rules left without queries), cache sizes and padding."""
    result = copy.deepcopy(dict(draft))
    gone = set(names)
    if not gone:
        return result
    result = _map_rule_lists(result, lambda values: [n for n in values if n not in gone])
    return _map_run_entries(result, lambda entries: {k: v for k, v in entries.items() if k not in gone})


def update_groups(draft: Mapping[str, Any], rows: Sequence[GroupRow]) -> Draft:
    """The draft with the groups table's rows as token_specs.

    A rename (one name changed in place) is followed in the rules, cache sizes and padding; deleted groups leave
    them. The tokens of a cached row go to run.kv_cache_sizes; cached groups lose their padding (not allowed).
    """
    old_rows = group_rows(draft) or []
    old_names, new_names = [r.name for r in old_rows], [r.name for r in rows]
    result = rename_groups(draft, detect_rename(old_names, new_names))
    result = forget_groups(result, removed_names(old_names, new_names))
    return set_rows(result, rows)


def set_rows(draft: Mapping[str, Any], rows: Sequence[GroupRow]) -> Draft:
    """The draft with ``rows`` as token_specs (names in the rules untouched); cached rows' tokens go to
    run.kv_cache_sizes and cached groups lose their padding (not allowed)."""
    result = copy.deepcopy(dict(draft))
    result["token_specs"] = rows_to_token_specs(rows)
    run = result.get("run", {})
    if not isinstance(run, dict):
        return result
    run = dict(run)
    cache_sizes = dict(run.get("kv_cache_sizes") or {}) if isinstance(run.get("kv_cache_sizes", {}), dict) else None
    padding = dict(run.get("padding") or {}) if isinstance(run.get("padding", {}), dict) else None
    for row in rows:
        if cache_sizes is not None:
            if not row.cached or row.tokens is None:
                cache_sizes.pop(row.name, None)
            elif row.name in cache_sizes or row.tokens != DEFAULT_CACHE_SIZE:
                cache_sizes[row.name] = row.tokens
        if padding is not None and row.cached:
            padding.pop(row.name, None)
    if cache_sizes is not None and (cache_sizes or "kv_cache_sizes" in run):
        run["kv_cache_sizes"] = cache_sizes
    if padding is not None and (padding or "padding" in run):
        run["padding"] = padding
    result["run"] = run
    return result


def move_group(draft: Mapping[str, Any], index: int, offset: int) -> Draft:
    """Move the group at ``index`` by ``offset`` places (clamped); input order is the token order on both axes."""
    result = copy.deepcopy(dict(draft))
    specs = result.get("token_specs")
    if not isinstance(specs, list) or not 0 <= index < len(specs):
        return result
    target = min(max(index + offset, 0), len(specs) - 1)
    specs.insert(target, specs.pop(index))
    return result


def group_names(draft: Mapping[str, Any]) -> list[str]:
    """Names of the groups that can be read from the draft, in order (empty names left out)."""
    return [row.name for row in group_rows(draft) or [] if row.name]
