"""Editing actions of the app that never lose the user's work, free of Streamlit.

Every action here either keeps what the user typed (carrying it along when names change, setting it aside while it
does not apply) or says, before anything is dropped, what would be dropped. The functions are pure: they take the
draft and what the widget reported, and return the new draft plus what the app must remember or show.
"""

import copy
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from noether.explorer import editing as ed

Kept = dict[str, Any]
"""Settings set aside by a kind switch, keyed like the attention section: "attention_patterns" (explicit rules kept
while an anchor kind generates them), "branches" and "anchor_suffix" (kept while the kind is mixed)."""


# --------------------------------------------------------------------------------------------------------------------
# The groups table: renames follow the row, not the name
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableEdit:
    """The draft after a groups-table edit and the name changes it made (the app applies them to what it keeps)."""

    draft: ed.Draft
    renames: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


def _rows_by_identity(base: Sequence[ed.GroupRow], delta: Mapping[str, Any]) -> list[tuple[Hashable, ed.GroupRow]]:
    """The table's rows after ``delta``, each with its identity: its index in ``base``, or ("added", n)."""
    rows: list[tuple[Hashable, ed.GroupRow]] = list(enumerate(base))
    for position, cells in (delta.get("edited_rows") or {}).items():
        index = int(position)
        if 0 <= index < len(rows) and isinstance(cells, Mapping):
            rows[index] = (index, ed._apply_cells(rows[index][1], cells))
    deleted = {int(i) for i in delta.get("deleted_rows") or []}
    rows = [row for index, row in enumerate(rows) if index not in deleted]
    for number, cells in enumerate(delta.get("added_rows") or []):
        if isinstance(cells, Mapping):
            rows.append((("added", number), ed._apply_cells(ed.GroupRow("", None, False), cells)))
    return rows


def _name_refusal(typed: str, typed_names: Counter[str]) -> str | None:
    """Why a typed name cannot be given to an existing group yet (None when it can)."""
    if not typed:
        return "a group needs a name"
    if typed_names[typed] > 1:
        return f"'{typed}' is already the name of another group"
    return None


def apply_table_edit(
    draft: Mapping[str, Any],
    base: Sequence[ed.GroupRow],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> TableEdit:
    """The draft after the groups table's edit state went from ``before`` to ``after`` (Streamlit's cumulative
    edit state of a table created from ``base``).

    A row keeps its identity through edits, so a renamed group takes its rules, cache size and padding along even
    when several names change at once. A name that is empty or already used by another row is not acted on: the
    group keeps its previous name (and its rules) until a usable name is typed; :func:`table_notes` says so.
    Only rows whose deletion was asked take their group out of the rules.
    """
    old = _rows_by_identity(base, before)
    new = _rows_by_identity(base, after)
    current = ed.group_rows(draft) or []
    if len(current) == len(old):
        current_names = {identity: row.name for (identity, _), row in zip(old, current, strict=True)}
    else:
        current_names = {identity: row.name for identity, row in old}
    name_counts = Counter(current_names.values())
    typed_names = Counter(row.name for _, row in new)
    rows: list[ed.GroupRow] = []
    renames: dict[str, str] = {}
    for identity, row in new:
        previous = current_names.get(identity)
        name = row.name
        if previous is not None and name != previous:
            if _name_refusal(name, typed_names) is not None:
                name = previous
            elif previous and name_counts[previous] == 1:
                renames[previous] = name
        rows.append(ed.GroupRow(name, row.tokens, row.cached))
    surviving = {identity for identity, _ in new}
    # Deleted groups leave the rules before renames happen, so a row renamed to a deleted group's name keeps its own.
    still_named = {current_names[i] for i in surviving if i in current_names and current_names[i] not in renames}
    removed = [
        name
        for identity, name in current_names.items()
        if identity not in surviving and name and name not in still_named
    ]
    result = ed.forget_groups(draft, removed)
    result = ed.rename_groups(result, renames)
    return TableEdit(ed.set_rows(result, rows), renames, list(dict.fromkeys(removed)))


def table_notes(draft: Mapping[str, Any], base: Sequence[ed.GroupRow], after: Mapping[str, Any]) -> list[str]:
    """What the table shows that the scenario does not take yet, and why (one sentence per row)."""
    typed = [row for _, row in _rows_by_identity(base, after)]
    current = ed.group_rows(draft) or []
    if len(typed) != len(current):
        return []
    typed_names = Counter(row.name for row in typed)
    notes = []
    for number, (shown, used) in enumerate(zip(typed, current, strict=True), start=1):
        if shown.name == used.name:
            continue
        reason = _name_refusal(shown.name, typed_names) or "the name is not taken yet"
        notes.append(
            f"Row {number}: {reason}, so the group is still called '{used.name}' and keeps its rules and "
            "settings. Type a name no other group has."
        )
    return notes


def follow_groups(kept: Kept | None, renames: Mapping[str, str], removed: Sequence[str]) -> Kept | None:
    """Rules set aside by a kind switch follow group renames and deletions like the draft's own rules."""
    if not kept or "attention_patterns" not in kept:
        return kept
    moved = ed.rename_groups(ed.forget_groups({"attention_patterns": kept["attention_patterns"]}, removed), renames)
    return {**kept, "attention_patterns": moved.get("attention_patterns", [])}


# --------------------------------------------------------------------------------------------------------------------
# Kind switches: rules and branches are set aside, not dropped
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindSwitch:
    """The draft after a kind switch, what was set aside for a switch back, and a sentence saying what happened."""

    draft: ed.Draft
    kept: Kept | None
    note: str = ""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def switch_kind(draft: Mapping[str, Any], kind: str, kept: Kept | None = None) -> KindSwitch:
    """Switch the attention kind without losing anything typed.

    To an anchor kind: the explicit rules are set aside (the module generates its own) and come back on the switch
    back to mixed; branches set aside earlier come back too. To mixed: the rules set aside earlier come back, or
    else the generated rules become explicit ones; branches and suffix are set aside.
    """
    attention = ed.section(draft, "attention")
    current = attention.get("kind", "mixed")
    kept = copy.deepcopy(dict(kept)) if kept else {}
    if kind == current:
        return KindSwitch(ed.set_value(draft, ["attention", "kind"], kind), kept or None)
    if current == "mixed":
        if "attention_patterns" in draft:
            kept["attention_patterns"] = copy.deepcopy(draft["attention_patterns"])
        base = {key: value for key, value in draft.items() if key != "attention_patterns"}
        for name in ("branches", "anchor_suffix"):
            if name in kept and name not in attention:
                base = ed.set_value(base, ["attention", name], kept.pop(name))
        switched = ed.set_kind(base, kind)
        rules = ed.rule_pairs({"attention_patterns": kept.get("attention_patterns")}) or []
        note = (
            f"Your {_count(len(rules), 'rule')} are kept aside while {kind} generates its own; switch back to mixed "
            "to get them back."
            if rules
            else ""
        )
        return KindSwitch(switched, kept or None, note)
    if kind != "mixed":
        return KindSwitch(ed.set_kind(draft, kind), kept or None)
    for name in ("branches", "anchor_suffix"):
        if name in attention:
            kept[name] = copy.deepcopy(attention[name])
    switched = ed.set_kind(draft, kind)
    restored = kept.pop("attention_patterns", None)
    if restored is not None:
        switched["attention_patterns"] = restored
        count = len(restored) if isinstance(restored, list) else 0
        return KindSwitch(switched, kept or None, f"Your {_count(count, 'rule')} from before are back.")
    return KindSwitch(switched, kept or None)


# --------------------------------------------------------------------------------------------------------------------
# The text editor's format switch: unapplied text is never rewritten away
# --------------------------------------------------------------------------------------------------------------------

TextFormat = Literal["yaml", "json"]


@dataclass(frozen=True)
class FormatSwitch:
    """The text and format the editor shows after a format switch was asked, and why it did not happen (if not)."""

    text: str
    fmt: TextFormat
    refused: str = ""


def has_unapplied_text(text: str, draft: Mapping[str, Any], fmt: TextFormat) -> bool:
    """Whether the editor holds text that differs from the draft it was written from."""
    return text.strip() != ed.draft_to_text(draft, fmt).strip()


def switch_text_format(text: str, draft: Mapping[str, Any], shown: TextFormat, wanted: TextFormat) -> FormatSwitch:
    """Rewrite the editor's text in ``wanted`` format, unless it holds unapplied edits: those stay as they are."""
    if wanted == shown:
        return FormatSwitch(text, shown)
    if has_unapplied_text(text, draft, shown):
        return FormatSwitch(
            text,
            shown,
            f"The text has changes that are not applied, so it stays {shown.upper()}. Apply them (or press "
            f"“Rewrite from the scenario” to discard them), then switch to {wanted.upper()}.",
        )
    return FormatSwitch(ed.draft_to_text(draft, wanted), wanted)
