"""Session state of the app: its keys, the draft being edited and the last valid scenario, and the widget callbacks.

Callbacks run before the script reruns, so they may reset widget values. Keys are part of the app's contract with its
tests: keep them stable.
"""

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer import edits, share
from noether.explorer.checkpoint import attention_prefixes, load_state_dict_bytes
from noether.explorer.pointcloud import load_cloud_bytes
from noether.explorer.presets import DEFAULT_PRESET, PRESETS
from noether.explorer.problems import ExplorerError, Problem

ss = st.session_state
PRESET_TITLES = {p.key: p.title for p in PRESETS}

# The draft is the document being edited (possibly invalid); ACTIVE is the last valid scenario, which the views
# show. Editor widgets are keyed by revision counters so that replacing the draft (an example, the text editor, a
# file, a link) re-creates them with the new values, while their own edits never reset them.
DRAFT, ACTIVE, FLASH, REQUESTED = "draft", "active", "flash", "requested"
TABLE_BASE, TABLE_REV, FORM_REV, UPLOAD_REV = "table_base", "table_rev", "form_rev", "upload_rev"
TEXT, TEXT_FORMAT, TEXT_PROBLEMS = "text_editor", "text_format", "text_problems"
TEXT_SHOWN_FORMAT, TEXT_NOTE = "text_shown_format", "text_note"
KEPT = "kept_aside"
"""Rules (or branches) a kind switch set aside, restored by the switch back (see :func:`edits.switch_kind`)."""
WEIGHTS, CLOUD, PRESET, VIEW, BUDGET = "trained_weights", "point_cloud", "preset", "view", "budget_mb"
# View settings live in widgets of tabs that are only rendered while open; re-assigning them every run keeps
# Streamlit from dropping them while another tab is shown.
PERSISTENT = (
    BUDGET,
    "layer",
    TEXT,
    TEXT_FORMAT,
    "v_batch",
    "v_head",
    "v_pooling",
    "v_colour",
    "v_shared",
    "v_qgroup",
    "v_qindex",
    "v_stats_head",
    "v_colour_by",
    "v_spatial_head",
    "v_cmp_source",
    "v_cmp_preset",
    "v_cmp_text",
    "z_q0",
    "z_q1",
    "z_k0",
    "z_k1",
    "ro_group",
    "ro_index",
    "ro_plane",
)


def flash(level: str, text: str) -> None:
    ss.setdefault(FLASH, []).append((level, text))


def problem_lines(problems: Sequence[Problem], draft: dict[str, Any] | None = None) -> str:
    return "\n".join(f"- {ed.problem_markdown(p, draft or {})}" for p in problems)


def replace_draft(draft: dict[str, Any], *, text: str | None = None) -> None:
    """A new document from outside the editors: every editor widget is re-created from it."""
    ss[DRAFT] = draft
    ss[TABLE_BASE] = ed.group_rows(draft)
    ss[TABLE_REV] = ss.get(TABLE_REV, 0) + 1
    ss[FORM_REV] = ss.get(FORM_REV, 0) + 1
    ss[TEXT] = text if text is not None else ed.draft_to_text(draft, ss.get(TEXT_FORMAT, "yaml"))
    ss[TEXT_SHOWN_FORMAT] = ss.get(TEXT_FORMAT, "yaml")
    ss[TEXT_PROBLEMS] = []
    ss[TEXT_NOTE] = ""
    ss[KEPT] = None


def edit(draft: dict[str, Any], *, forms: bool = False, table: bool = False) -> None:
    """An edit made in a widget: the widget keeps its state; ``forms``/``table`` re-create dependent editors."""
    ss[DRAFT] = draft
    if table:
        ss[TABLE_BASE] = ed.group_rows(draft)
        ss[TABLE_REV] += 1
    if forms:
        ss[FORM_REV] += 1
    # Unreadable text waiting in the text editor is the user's work too: keep it until they rewrite or fix it.
    if not ss.get(TEXT_PROBLEMS):
        ss[TEXT] = ed.draft_to_text(draft, ss.get(TEXT_FORMAT, "yaml"))


def init_state() -> None:
    if DRAFT in ss:
        return
    ss[FLASH], ss[REQUESTED], ss[TEXT_FORMAT], ss[PRESET], ss[BUDGET] = [], set(), "yaml", DEFAULT_PRESET, 0
    ss[UPLOAD_REV] = 0
    draft = None
    token = st.query_params.get(share.SHARE_PARAM)
    if token:
        report = share.decode_share(token)
        if report.scenario is not None:
            draft = ed.draft_from_scenario(report.scenario)
            ss[PRESET] = None
            flash("success", "Restored the scenario from the link.")
        else:
            flash(
                "error",
                "The scenario in the link could not be restored, so the default example is shown instead:\n"
                + problem_lines(report.problems),
            )
    replace_draft(draft if draft is not None else ed.preset_draft(DEFAULT_PRESET))


def on_preset() -> None:
    if ss[PRESET] is None:
        return
    replace_draft(ed.preset_draft(ss[PRESET]))
    flash("success", f"Loaded the example “{PRESET_TITLES[ss[PRESET]]}”.")


def on_load_example(key: str) -> None:
    ss[PRESET] = key
    on_preset()


def on_empty() -> None:
    ss[PRESET] = None
    replace_draft(ed.empty_draft())
    flash(
        "info",
        "Started an empty scenario: add token groups in the table (type into its empty last row), then add rules.",
    )


def on_upload(key: str) -> None:
    upload = ss.get(key)
    if upload is None:
        return
    data = upload.getvalue()
    ss[UPLOAD_REV] += 1
    ss[PRESET] = None
    parsed = ed.parse_text(data, name=upload.name)
    if parsed.scenario is not None:
        replace_draft(ed.draft_from_scenario(parsed.scenario))
        flash("success", f"Opened {ed.escape_markdown(upload.name)}.")
        return
    text = data.decode("utf-8", "replace")
    if parsed.document is not None:
        replace_draft(parsed.document, text=text)
        flash("warning", f"Opened {ed.escape_markdown(upload.name)}; it has problems, listed next to the settings.")
        return
    ss[TEXT], ss[TEXT_PROBLEMS] = text, parsed.problems
    flash(
        "error",
        f"{ed.escape_markdown(upload.name)} could not be read; it is in the “Edit as text” tab to fix:\n"
        + problem_lines(parsed.problems),
    )


def table_seen_key(key: str) -> str:
    """Where the table's previous edit state is kept: renames are told apart from new rows by comparing the two."""
    return f"{key}:seen"


def on_table(key: str) -> None:
    before = ss.get(table_seen_key(key)) or {}
    after = {name: _plain(value) for name, value in (ss[key] or {}).items()}
    result = edits.apply_table_edit(ss[DRAFT], ss[TABLE_BASE] or [], before, after)
    ss[table_seen_key(key)] = after
    ss[KEPT] = edits.follow_groups(ss.get(KEPT), result.renames, result.removed)
    edit(result.draft, forms=True)


def _plain(value: Any) -> Any:
    """A copy of the widget's edit state (Streamlit may reuse and mutate its own containers)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def on_move(key: str, offset: int) -> None:
    edit(ed.move_group(ss[DRAFT], ss[key], offset), forms=True, table=True)


def on_field(path: tuple[str, ...], key: str) -> None:
    edit(ed.set_value(ss[DRAFT], path, ss[key]))


def on_padding(name: str, key: str) -> None:
    value = ss[key]
    path = ("run", "padding", name)
    edit(ed.set_value(ss[DRAFT], path, value) if value else ed.remove_value(ss[DRAFT], path))


def on_kind(key: str) -> None:
    switched = edits.switch_kind(ss[DRAFT], ss[key], ss.get(KEPT))
    ss[KEPT] = switched.kept
    edit(switched.draft, forms=True)
    if switched.note:
        flash("info", switched.note)


def on_rule(index: int, part: str, key: str) -> None:
    values = list(ss[key])
    draft = ss[DRAFT]
    edit(ed.set_rule(draft, index, queries=values) if part == "q" else ed.set_rule(draft, index, keys=values))


def on_add_rule() -> None:
    edit(ed.add_rule(ss[DRAFT]), forms=True)


def on_remove_rule(index: int) -> None:
    edit(ed.remove_rule(ss[DRAFT], index), forms=True)


def on_branches(key: str) -> None:
    edit(ed.set_value(ss[DRAFT], ("attention", "branches"), ed.parse_branches(ss[key])))


def on_infer_branches() -> None:
    _, suffix = ed.branches_of(ss[DRAFT])
    branches = ed.infer_branches(ed.group_names(ss[DRAFT]), suffix)
    edit(ed.set_value(ss[DRAFT], ("attention", "branches"), branches), forms=True)


def on_branch_groups() -> None:
    edit(ed.add_branch_groups(ss[DRAFT]), forms=True, table=True)


def on_text() -> None:
    parsed = ed.parse_text(ss[TEXT])
    if parsed.document is None:
        ss[TEXT_PROBLEMS] = parsed.problems
        return
    replace_draft(parsed.document, text=ss[TEXT])


def on_text_format() -> None:
    """The format radio: the text is rewritten in the new format unless it holds unapplied edits, which stay."""
    shown = ss.get(TEXT_SHOWN_FORMAT, "yaml")
    switched = edits.switch_text_format(ss.get(TEXT, ""), ss[DRAFT], shown, ss[TEXT_FORMAT])
    ss[TEXT], ss[TEXT_FORMAT], ss[TEXT_SHOWN_FORMAT] = switched.text, switched.fmt, switched.fmt
    ss[TEXT_NOTE] = switched.refused


def on_rewrite_text() -> None:
    """Discard unapplied text (the button says so) and show the draft again."""
    ss[TEXT] = ed.draft_to_text(ss[DRAFT], ss[TEXT_FORMAT])
    ss[TEXT_SHOWN_FORMAT] = ss[TEXT_FORMAT]
    ss[TEXT_PROBLEMS] = []
    ss[TEXT_NOTE] = ""


def _read_upload(key: str, load: Callable[[bytes, str], Any], what: str) -> tuple[str, str, Any] | None:
    """(file name, digest, what ``load`` made of it) of the file uploaded under ``key``; None when there is none or
    it cannot be used (an error is flashed)."""
    upload = ss.get(key)
    if upload is None:
        return None
    ss[UPLOAD_REV] += 1
    data = upload.getvalue()
    try:
        return upload.name, ed.digest(data), load(data, upload.name)
    except ExplorerError as exc:
        flash("error", f"{what} could not be used:\n" + problem_lines(exc.problems))
        return None


def on_weights_upload(key: str) -> None:
    read = _read_upload(key, load_state_dict_bytes, "The weights file")
    if read is None:
        return
    name, digest, state_dict = read
    prefixes = attention_prefixes(state_dict)
    ss[WEIGHTS] = {"name": name, "digest": digest, "state_dict": state_dict, "prefixes": prefixes}
    ss["w_prefix"] = prefixes[0] if prefixes else ""
    # Whether the tensors fit the scenario is known only when the layer is built: say what is known now.
    flash(
        "info",
        f"Read {len(state_dict)} tensors from {ed.escape_markdown(name)}; they are checked against the scenario's "
        "layer when it runs.",
    )


def on_cloud_upload(key: str) -> None:
    read = _read_upload(key, load_cloud_bytes, "The point cloud")
    if read is None:
        return
    name, digest, cloud = read
    ss[CLOUD] = {"name": name, "digest": digest, "arrays": cloud}
    flash("success", f"Loaded the point cloud {ed.escape_markdown(name)}.")


def on_forget(key: str) -> None:
    ss.pop(key, None)


def on_request(token: str) -> None:
    ss[REQUESTED].add(token)


def on_share(token: str) -> None:
    st.query_params[share.SHARE_PARAM] = token
