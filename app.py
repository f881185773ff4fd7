"""Noether attention explorer: design token groups and attention rules, validate them as you type, run the attention
module on the device you pick, and inspect masks, attention weights, statistics, cost, KV-cache passes and token
positions, at any token count (every view is pooled to a few hundred cells per axis).

Widgets only: what this file shows comes from the engine (noether.explorer.*: editing for the draft, views, figures,
share and compare among them), which holds all logic and is tested without Streamlit. Start it with `make run` or
`streamlit run app.py`.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import streamlit as st

from noether.explorer import compare, share, views
from noether.explorer import editing as ed
from noether.explorer.checkpoint import attention_prefixes, load_state_dict_bytes
from noether.explorer.devices import available_devices, device_label, device_options
from noether.explorer.figures import (
    backend_figure,
    group_mask_figure,
    heatmap,
    map_figure,
    mark_query_row,
    mask_figure,
    mass_figure,
    point_cloud_figure,
    row_figure,
)
from noether.explorer.inputs import short_of_points
from noether.explorer.io import dump_json, dump_python, dump_yaml, load_scenario_bytes
from noether.explorer.png import map_png
from noether.explorer.pointcloud import load_cloud_bytes
from noether.explorer.presets import DEFAULT_PRESET, PRESETS, load_preset, preset_description
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import DEFAULT_CACHE_SIZE, Scenario, ScenarioReport, validate_scenario
from noether.explorer.weights import WeightOptions, WeightResult

st.set_page_config(
    page_title="Noether attention explorer", page_icon=":material/hub:", layout="wide", initial_sidebar_state=460
)
log = logging.getLogger("noether.explorer.app")
ss = st.session_state

# (Comments, not docstrings: Streamlit's "magic" would print a bare string statement in the app.)
# Pixels per axis of every map; the weights are computed on this grid, so the displays never re-pool.
DISPLAY_BINS = 400
# Pixels per axis of the small maps when all heads are shown side by side.
GRID_BINS = 200
MAX_GRID_HEADS = 8
# Estimated seconds below which weights and KV-cache checks run without asking.
AUTO_COMPUTE_SECONDS = 3.0
PLOTLY_CONFIG = {"displaylogo": False}
TABS = ("Mask", "Weights", "Statistics", "Cost", "KV cache", "Spatial", "Compare", "Edit as text", "Export")
PRESET_TITLES = {p.key: p.title for p in PRESETS}

# Session-state keys. The draft is the document being edited (possibly invalid); ACTIVE is the last valid scenario,
# which the views show. Editor widgets are keyed by revision counters so that replacing the draft (an example, the
# text editor, a file, a link) re-creates them with the new values, while their own edits never reset them.
DRAFT, ACTIVE, FLASH, REQUESTED = "draft", "active", "flash", "requested"
TABLE_BASE, TABLE_REV, FORM_REV, UPLOAD_REV = "table_base", "table_rev", "form_rev", "upload_rev"
TEXT, TEXT_FORMAT, TEXT_PROBLEMS = "text_editor", "text_format", "text_problems"
WEIGHTS, CLOUD, PRESET, VIEW, BUDGET = "trained_weights", "point_cloud", "preset", "view", "budget_mb"
# View settings live in widgets of tabs that are only rendered while open; re-assigning them every run keeps
# Streamlit from dropping them while another tab is shown.
PERSISTENT = (
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
)


# ----------------------------------------------------------------------------------------------------------------
# Session state and callbacks (callbacks run before the script, so they may reset widget values)
# ----------------------------------------------------------------------------------------------------------------


def _flash(level: str, text: str) -> None:
    ss.setdefault(FLASH, []).append((level, text))


def _problem_lines(problems: Sequence[Problem], draft: dict[str, Any] | None = None) -> str:
    return "\n".join(f"- {ed.problem_markdown(p, draft or {})}" for p in problems)


def _replace_draft(draft: dict[str, Any], *, text: str | None = None) -> None:
    """A new document from outside the editors: every editor widget is re-created from it."""
    ss[DRAFT] = draft
    ss[TABLE_BASE] = ed.group_rows(draft)
    ss[TABLE_REV] = ss.get(TABLE_REV, 0) + 1
    ss[FORM_REV] = ss.get(FORM_REV, 0) + 1
    ss[TEXT] = text if text is not None else ed.draft_to_text(draft, ss.get(TEXT_FORMAT, "yaml"))
    ss[TEXT_PROBLEMS] = []


def _edit(draft: dict[str, Any], *, forms: bool = False, table: bool = False) -> None:
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


def _init() -> None:
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
            _flash("success", "Restored the scenario from the link.")
        else:
            _flash(
                "error",
                "The scenario in the link could not be restored, so the default example is shown instead:\n"
                + _problem_lines(report.problems),
            )
    _replace_draft(draft if draft is not None else ed.preset_draft(DEFAULT_PRESET))


def _on_preset() -> None:
    if ss[PRESET] is None:
        return
    _replace_draft(ed.preset_draft(ss[PRESET]))
    _flash("success", f"Loaded the example “{PRESET_TITLES[ss[PRESET]]}”.")


def _on_load_example(key: str) -> None:
    ss[PRESET] = key
    _on_preset()


def _on_empty() -> None:
    ss[PRESET] = None
    _replace_draft(ed.empty_draft())
    _flash(
        "info",
        "Started an empty scenario: add token groups in the table (type into its empty last row), then add rules.",
    )


def _on_upload(key: str) -> None:
    upload = ss.get(key)
    if upload is None:
        return
    data = upload.getvalue()
    ss[UPLOAD_REV] += 1
    ss[PRESET] = None
    parsed = ed.parse_text(data, name=upload.name)
    if parsed.scenario is not None:
        _replace_draft(ed.draft_from_scenario(parsed.scenario))
        _flash("success", f"Opened {ed.escape_markdown(upload.name)}.")
        return
    text = data.decode("utf-8", "replace")
    if parsed.document is not None:
        _replace_draft(parsed.document, text=text)
        _flash("warning", f"Opened {ed.escape_markdown(upload.name)}; it has problems, listed next to the settings.")
        return
    ss[TEXT], ss[TEXT_PROBLEMS] = text, parsed.problems
    _flash(
        "error",
        f"{ed.escape_markdown(upload.name)} could not be read; it is in the “Edit as text” tab to fix:\n"
        + _problem_lines(parsed.problems),
    )


def _on_table(key: str) -> None:
    rows = ed.apply_table_delta(ss[TABLE_BASE] or [], ss[key])
    _edit(ed.update_groups(ss[DRAFT], rows), forms=True)


def _on_move(key: str, offset: int) -> None:
    _edit(ed.move_group(ss[DRAFT], ss[key], offset), forms=True, table=True)


def _on_field(path: tuple[str, ...], key: str) -> None:
    _edit(ed.set_value(ss[DRAFT], path, ss[key]))


def _on_padding(name: str, key: str) -> None:
    value = ss[key]
    path = ("run", "padding", name)
    _edit(ed.set_value(ss[DRAFT], path, value) if value else ed.remove_value(ss[DRAFT], path))


def _on_kind(key: str) -> None:
    _edit(ed.set_kind(ss[DRAFT], ss[key]), forms=True)


def _on_rule(index: int, part: str, key: str) -> None:
    values = list(ss[key])
    draft = ss[DRAFT]
    _edit(ed.set_rule(draft, index, queries=values) if part == "q" else ed.set_rule(draft, index, keys=values))


def _on_add_rule() -> None:
    _edit(ed.add_rule(ss[DRAFT]), forms=True)


def _on_remove_rule(index: int) -> None:
    _edit(ed.remove_rule(ss[DRAFT], index), forms=True)


def _on_branches(key: str) -> None:
    _edit(ed.set_value(ss[DRAFT], ("attention", "branches"), ed.parse_branches(ss[key])))


def _on_infer_branches() -> None:
    _, suffix = ed.branches_of(ss[DRAFT])
    branches = ed.infer_branches(ed.group_names(ss[DRAFT]), suffix)
    _edit(ed.set_value(ss[DRAFT], ("attention", "branches"), branches), forms=True)


def _on_branch_groups() -> None:
    _edit(ed.add_branch_groups(ss[DRAFT]), forms=True, table=True)


def _on_text() -> None:
    parsed = ed.parse_text(ss[TEXT])
    if parsed.document is None:
        ss[TEXT_PROBLEMS] = parsed.problems
        return
    _replace_draft(parsed.document, text=ss[TEXT])


def _on_text_format() -> None:
    ss[TEXT] = ed.draft_to_text(ss[DRAFT], ss[TEXT_FORMAT])
    ss[TEXT_PROBLEMS] = []


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
        _flash("error", f"{what} could not be used:\n" + _problem_lines(exc.problems))
        return None


def _on_weights_upload(key: str) -> None:
    read = _read_upload(key, load_state_dict_bytes, "The weights file")
    if read is None:
        return
    name, digest, state_dict = read
    prefixes = attention_prefixes(state_dict)
    ss[WEIGHTS] = {"name": name, "digest": digest, "state_dict": state_dict, "prefixes": prefixes}
    ss["w_prefix"] = prefixes[0] if prefixes else ""
    _flash("success", f"Loaded trained weights from {ed.escape_markdown(name)}.")


def _on_cloud_upload(key: str) -> None:
    read = _read_upload(key, load_cloud_bytes, "The point cloud")
    if read is None:
        return
    name, digest, cloud = read
    ss[CLOUD] = {"name": name, "digest": digest, "arrays": cloud}
    _flash("success", f"Loaded the point cloud {ed.escape_markdown(name)}.")


def _on_forget(key: str) -> None:
    ss.pop(key, None)


def _on_request(token: str) -> None:
    ss[REQUESTED].add(token)


def _on_share(token: str) -> None:
    st.query_params[share.SHARE_PARAM] = token


# ----------------------------------------------------------------------------------------------------------------
# Cached engine objects: one prepared run per scenario (+ weights, cloud, budget); its memoisation does the rest
# ----------------------------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=4, show_spinner="Preparing the module and inputs…")
def _prepared_run(
    run_key: str,
    _scenario: Scenario,
    _weights: dict | None,
    _prefix: str | None,
    _cloud: dict | None,
    _budget_mb: float | None,
) -> ExplorerRun | list[Problem]:
    """The run, or why it cannot be prepared (cached too, so that a refusal is not retried on every rerun)."""
    try:
        return ExplorerRun(
            _scenario, weights=_weights, weights_prefix=_prefix, point_cloud=_cloud, memory_budget_mb=_budget_mb
        )
    except ExplorerError as exc:
        return exc.problems


@st.cache_resource(max_entries=16, show_spinner=False)
def _mask_view(key: str, _scenario: Scenario) -> views.MaskView:
    return views.mask_view(_scenario, DISPLAY_BINS)


@st.cache_resource(max_entries=16, show_spinner=False)
def _preset(key: str) -> Scenario:
    return load_preset(key)


@dataclass
class Context:
    """What the views need: the draft and its report, and the last valid scenario prepared for running."""

    draft: dict[str, Any]
    report: ScenarioReport
    scenario: Scenario | None
    mask: views.MaskView | None = None
    run: ExplorerRun | None = None
    run_key: str = ""
    run_problems: list[Problem] | None = None

    @property
    def edited_is_valid(self) -> bool:
        return self.report.ok


def _prepare(draft: dict[str, Any], report: ScenarioReport) -> Context:
    scenario = ss.get(ACTIVE)
    ctx = Context(draft, report, scenario)
    if scenario is None:
        return ctx
    key = ed.scenario_key(scenario)
    ctx.mask = _mask_view(key, scenario)
    weights, cloud = ss.get(WEIGHTS), ss.get(CLOUD)
    prefix = (ss.get("w_prefix") or None) if weights else None
    budget = float(ss.get(BUDGET) or 0)
    ctx.run_key = ed.run_cache_key(
        scenario,
        weights_digest=weights["digest"] if weights else "",
        weights_prefix=prefix or "",
        cloud_digest=cloud["digest"] if cloud else "",
        memory_budget_mb=budget,
    )
    prepared = _prepared_run(
        ctx.run_key,
        scenario,
        weights["state_dict"] if weights else None,
        prefix,
        cloud["arrays"] if cloud and scenario.run.inputs == "point_cloud" else None,
        budget or None,
    )
    if isinstance(prepared, ExplorerRun):
        ctx.run = prepared
    else:
        ctx.run_problems = prepared
    return ctx


@contextmanager
def _progress(label: str) -> Iterator[Callable[[float, str], None]]:
    """A progress bar fed by the engine's per-call callback (the cached run is shared, so nothing is set on it)."""
    bar = st.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        yield report
    finally:
        bar.empty()


def _needs_run(ctx: Context) -> ExplorerRun | None:
    if ctx.run is None:
        st.error("The scenario cannot be prepared for running:\n" + _problem_lines(ctx.run_problems or [], ctx.draft))
    return ctx.run


def _gate(ctx: Context, what: str, estimate: Any, button: str) -> bool:
    """Small jobs run at once; bigger ones wait for a click (the estimate says how big)."""
    token = f"{what}:{ctx.run_key}"
    if estimate.seconds <= AUTO_COMPUTE_SECONDS or token in ss[REQUESTED]:
        return True
    st.info(
        f"This is a bigger computation: {estimate} (a rough estimate; a busy CPU can take several times longer). "
        "It runs when you ask for it, with a progress bar."
    )
    st.button(button, type="primary", on_click=_on_request, args=(token,), key=f"request_{what}")
    return False


def _weights(ctx: Context) -> WeightResult | None:
    run = _needs_run(ctx)
    if run is None or not _gate(ctx, "weights", run.weights_estimate(DISPLAY_BINS, WeightOptions()), "Compute weights"):
        return None
    with _progress("Computing attention weights…") as report:
        return run.weights(DISPLAY_BINS, progress=report)


# ----------------------------------------------------------------------------------------------------------------
# Small widget helpers
# ----------------------------------------------------------------------------------------------------------------


def _problems_box(problems: Sequence[Problem], draft: dict[str, Any]) -> None:
    """Problems next to the editor they concern: errors in red, warnings in yellow."""
    found = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    if found:
        st.error(_problem_lines(found, draft))
    if warnings:
        st.warning(_problem_lines(warnings, draft))


def _ensure(key: str, options: Sequence[Any], default: Any) -> None:
    """Reset a persisted view setting that the current scenario does not offer (e.g. head 5 of 3)."""
    if key not in ss or ss[key] not in options:
        ss[key] = default


def _chart(fig: Any, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key)


def _batch_picker(ctx: Context, key: str = "v_batch") -> int:
    assert ctx.scenario is not None
    size = ctx.scenario.run.batch_size
    if size == 1:
        return 0
    _ensure(key, list(range(size)), 0)
    return int(st.selectbox("Batch element", list(range(size)), key=key))


def _query_picker(ctx: Context) -> int | None:
    """Pick a query token by group and index; returns its query-axis row (the same choice in every view)."""
    assert ctx.mask is not None
    layout = ctx.mask.layout
    groups = [g.name for g in layout.query_groups if g.size > 0]
    if not groups:
        st.info("No input group has tokens, so there is no query token to pick.")
        return None
    _ensure("v_qgroup", groups, groups[0])
    left, right = st.columns([3, 2])
    group = left.selectbox("Query group", groups, key="v_qgroup")
    size = layout.by_name[group].size
    ss["v_qindex"] = min(max(int(ss.get("v_qindex", 0)), 0), size - 1)
    index = right.number_input(f"Token index (0 – {size - 1:,})", min_value=0, max_value=size - 1, key="v_qindex")
    return views.query_row(layout, group, int(index))


def _guarded(name: str, render: Callable[[Context], None], ctx: Context) -> None:
    """Run one view; engine refusals become a plain message and nothing ever shows a traceback."""
    try:
        render(ctx)
    except ExplorerError as exc:
        st.error(_problem_lines(exc.problems, ctx.draft))
    except Exception as exc:
        log.exception("the %s view failed", name)
        st.error(
            f"The {name} view ran into an unexpected error ({type(exc).__name__}: {ed.escape_markdown(str(exc))}). "
            "The scenario is unchanged; the details are in the server log."
        )


# ----------------------------------------------------------------------------------------------------------------
# Sidebar: source and editors
# ----------------------------------------------------------------------------------------------------------------


def _source() -> None:
    st.selectbox(
        "Example",
        [p.key for p in PRESETS],
        format_func=PRESET_TITLES.__getitem__,
        key=PRESET,
        on_change=_on_preset,
        placeholder="Pick an example to load",
        help="Selecting an example replaces the current scenario.",
    )
    if ss[PRESET] is not None:
        st.caption(preset_description(ss[PRESET]))
    left, right = st.columns(2)
    left.button(
        "Reload example",
        on_click=_on_preset,
        width="stretch",
        disabled=ss[PRESET] is None,
        help="Discard the edits and load the example again.",
    )
    right.button("Start empty", on_click=_on_empty, width="stretch")
    key = f"upload@{ss[UPLOAD_REV]}"
    st.file_uploader(
        "Open a scenario file",
        type=["yaml", "yml", "json"],
        key=key,
        on_change=_on_upload,
        args=(key,),
        help="YAML or JSON with attention, token_specs, attention_patterns and run (see the built-in examples).",
    )


def _status(report: ScenarioReport) -> None:
    errors = [p for p in report.problems if p.severity == "error"]
    if not errors:
        scenario = report.scenario
        assert scenario is not None
        warnings = len(report.problems)
        extra = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
        st.success(f"Valid: {len(scenario.token_specs)} groups, {len(scenario.patterns())} rules{extra}.")
    else:
        st.error(
            f"{len(errors)} problem{'s' * (len(errors) != 1)}, listed next to the settings below. Running is paused "
            "until they are fixed; the views keep showing the last valid scenario."
        )


def _groups_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rows = ss[TABLE_BASE]
    if rows is None:
        st.warning("token_specs cannot be shown as a table. Fix it in the “Edit as text” tab.")
        _problems_box(problems, draft)
        return
    key = f"groups@{ss[TABLE_REV]}"
    st.data_editor(
        ed.table_frame(rows),
        key=key,
        on_change=_on_table,
        args=(key,),
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        column_config={
            ed.COLUMN_NAME: st.column_config.TextColumn(
                "name", help="Group name, e.g. surface_anchors (anchor kinds read the branch from it)."
            ),
            ed.COLUMN_TOKENS: st.column_config.NumberColumn(
                "tokens",
                min_value=0,
                step=1,
                format="%d",
                help="Tokens of the group in the input; for a KV-cache group, the cached tokens to simulate.",
            ),
            ed.COLUMN_CACHED: st.column_config.CheckboxColumn(
                "KV cache",
                help="size null: not in the input; keys/values come from a cache an earlier pass filled, "
                "and the group has no queries.",
            ),
        },
    )
    st.caption(
        "Row order is the order in the input, on both axes. Add a group in the empty last row; delete by "
        "selecting rows."
    )
    names = [r.name or "(unnamed)" for r in ed.group_rows(draft) or []]
    if len(names) > 1:
        move = f"move@{ss[TABLE_REV]}"
        pick, up, down = st.columns([3, 1, 1], vertical_alignment="bottom")
        pick.selectbox("Reorder", range(len(names)), format_func=names.__getitem__, key=move)
        up.button(
            ":material/arrow_upward:",
            key=f"up@{ss[TABLE_REV]}",
            on_click=_on_move,
            args=(move, -1),
            help="Move earlier in the input",
        )
        down.button(
            ":material/arrow_downward:",
            key=f"down@{ss[TABLE_REV]}",
            on_click=_on_move,
            args=(move, 1),
            help="Move later in the input",
        )
    _problems_box(problems, draft)


def _rules_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rev = ss[FORM_REV]
    attention = ed.section(draft, "attention")
    kind = ed.choice(attention.get("kind", "mixed"), ed.KINDS, "mixed")
    key = f"kind@{rev}"
    st.selectbox(
        "Kind",
        ed.KINDS,
        index=ed.KINDS.index(kind),
        format_func=ed.KIND_LABELS.__getitem__,
        key=key,
        on_change=_on_kind,
        args=(key,),
        help="mixed: you write the rules. Anchor kinds generate them from branch names (Noether's anchor modules).",
    )
    if kind == "mixed":
        _explicit_rules(draft, rev)
    elif kind == "perceiver":
        st.caption("A perceiver has one rule: the first group's queries attend to the second group's keys/values.")
        st.dataframe(
            [{"queries": ", ".join(q), "attend to": ", ".join(kv)} for q, kv in ed.generated_rules(draft) or []],
            hide_index=True,
            width="stretch",
        )
    else:
        _anchor_rules(draft, rev)
    _problems_box(problems, draft)


def _explicit_rules(draft: dict[str, Any], rev: int) -> None:
    pairs = ed.rule_pairs(draft)
    if pairs is None:
        st.warning("attention_patterns cannot be shown as rules. Fix it in the “Edit as text” tab.")
        return
    names = ed.group_names(draft)
    st.caption("Each group is a query in exactly one rule; its tokens attend to every token of the listed groups.")
    for index, (queries, keys) in enumerate(pairs):
        options = list(dict.fromkeys([*names, *queries, *keys]))

        def label(name: str) -> str:
            return name if name in names else f"{name} (not a group)"

        with st.container(border=True):
            q_key, kv_key = f"rule{index}_q@{rev}", f"rule{index}_kv@{rev}"
            st.multiselect(
                f"Rule {index + 1}: queries",
                options,
                default=list(dict.fromkeys(queries)),
                format_func=label,
                key=q_key,
                on_change=_on_rule,
                args=(index, "q", q_key),
            )
            st.multiselect(
                "attend to (keys/values)",
                options,
                default=list(dict.fromkeys(keys)),
                format_func=label,
                key=kv_key,
                on_change=_on_rule,
                args=(index, "kv", kv_key),
            )
            st.button("Remove rule", key=f"rm_rule{index}@{rev}", on_click=_on_remove_rule, args=(index,))
    st.button("Add rule", on_click=_on_add_rule, key=f"add_rule@{rev}", help="Starts with the uncovered groups.")


def _anchor_rules(draft: dict[str, Any], rev: int) -> None:
    branches, suffix = ed.branches_of(draft)
    key = f"branches@{rev}"
    st.text_input(
        "Branches",
        value=", ".join(branches),
        key=key,
        on_change=_on_branches,
        args=(key,),
        help="Comma-separated, e.g. surface, volume. A group belongs to the branch its name starts with.",
    )
    suffix_key = f"suffix@{rev}"
    st.text_input(
        "Anchor suffix",
        value=suffix,
        key=suffix_key,
        on_change=_on_field,
        args=(("attention", "anchor_suffix"), suffix_key),
        help='The anchor group of branch "surface" is "surface" + suffix.',
    )
    left, right = st.columns(2)
    left.button("Branches from groups", on_click=_on_infer_branches, key=f"infer@{rev}", width="stretch")
    right.button("Add branch groups", on_click=_on_branch_groups, key=f"bgroups@{rev}", width="stretch")
    generated = ed.generated_rules(draft)
    if generated:
        st.caption("Generated rules (they follow the branches and group names):")
        st.dataframe(
            [{"queries": ", ".join(q), "attend to": ", ".join(kv)} for q, kv in generated],
            hide_index=True,
            width="stretch",
        )


def _attention_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rev = ss[FORM_REV]
    attention = ed.section(draft, "attention")

    def field(name: str) -> tuple[tuple[tuple[str, ...], str], str]:
        key = f"{name}@{rev}"
        return (("attention", name), key), key

    left, right = st.columns(2)
    args, key = field("hidden_dim")
    left.number_input(
        "hidden_dim", value=ed.as_int(attention.get("hidden_dim"), 128), step=1, key=key, on_change=_on_field, args=args
    )
    args, key = field("num_heads")
    right.number_input(
        "num_heads", value=ed.as_int(attention.get("num_heads"), 4), step=1, key=key, on_change=_on_field, args=args
    )
    hidden, heads = attention.get("hidden_dim"), attention.get("num_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0:
        st.caption(f"head_dim = {hidden // heads}")
    for name, label, default in (
        ("use_rope", "RoPE (rotary position embedding of the 3-D positions)", False),
        ("qk_norm", "QK norm (normalise queries and keys per head)", False),
        ("bias", "bias in the projections", True),
    ):
        args, key = field(name)
        st.checkbox(label, value=ed.as_bool(attention.get(name), default), key=key, on_change=_on_field, args=args)
    args, key = field("dropout")
    st.number_input(
        "dropout",
        value=ed.as_float(attention.get("dropout"), 0.0),
        step=0.05,
        format="%.2f",
        key=key,
        on_change=_on_field,
        args=args,
        help="Part of the config; the explorer runs in eval mode.",
    )
    args, key = field("init_weights")
    init = attention.get("init_weights", "truncnormal002")
    options = list(ed.INIT_MODES) if init in ed.INIT_MODES or not isinstance(init, str) else [*ed.INIT_MODES, init]
    st.selectbox(
        "init_weights",
        options,
        index=options.index(ed.choice(init, options, "truncnormal002")),
        key=key,
        on_change=_on_field,
        args=args,
    )
    _problems_box(problems, draft)


def _run_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rev = ss[FORM_REV]
    run = ed.section(draft, "run")
    available = available_devices()

    def field(name: str) -> tuple[tuple[tuple[str, ...], str], str]:
        key = f"run_{name}@{rev}"
        return (("run", name), key), key

    device = run.get("device", "auto")
    devices = device_options(device, available)
    args, key = field("device")
    st.selectbox(
        "Device",
        devices,
        index=devices.index(ed.choice(device, devices, "auto")),
        format_func=lambda d: device_label(d, available),
        key=key,
        on_change=_on_field,
        args=args,
    )
    args, key = field("dtype")
    dtype = ed.choice(run.get("dtype", "float32"), ed.DTYPES, "float32")
    st.selectbox("dtype", ed.DTYPES, index=ed.DTYPES.index(dtype), key=key, on_change=_on_field, args=args)
    left, right = st.columns(2)
    args, key = field("batch_size")
    left.number_input(
        "batch size", value=ed.as_int(run.get("batch_size"), 1), step=1, key=key, on_change=_on_field, args=args
    )
    args, key = field("seed")
    right.number_input("seed", value=ed.as_int(run.get("seed"), 0), step=1, key=key, on_change=_on_field, args=args)
    args, key = field("inputs")
    inputs = ed.choice(run.get("inputs", "random"), ("random", "point_cloud"), "random")
    st.radio(
        "Inputs",
        ("random", "point_cloud"),
        index=("random", "point_cloud").index(inputs),
        horizontal=True,
        key=key,
        on_change=_on_field,
        args=args,
        help="random: seeded Gaussian features, positions uniform in a box. point_cloud: sin-cos features of "
        "points on the sample car (or your uploaded cloud).",
    )
    args, key = field("weights")
    weights = ed.choice(run.get("weights", "init"), ("init", "spatial"), "init")
    st.radio(
        "Weights",
        ("init", "spatial"),
        index=("init", "spatial").index(weights),
        horizontal=True,
        key=key,
        on_change=_on_field,
        args=args,
        help="init: the module's seeded initialisation. spatial: identity Q/K projections, so attention "
        "follows feature similarity (proximity for point-cloud inputs). Trained weights replace both.",
    )
    rows = [r for r in ed.group_rows(draft) or [] if r.name and not r.cached]
    if rows:
        st.caption("Padding: trailing tokens of a group that no query may attend (key_padding_mask).")
        padding = ed.section(run, "padding")
        cells = st.columns(2)
        for index, row in enumerate(rows):
            key = f"pad{index}@{rev}"
            cells[index % 2].number_input(
                f"padding of {row.name}",
                value=ed.as_int(padding.get(row.name), 0),
                step=1,
                key=key,
                on_change=_on_padding,
                args=(row.name, key),
            )
    st.caption(f"The tokens column of a KV-cache group sets its cached tokens (default {DEFAULT_CACHE_SIZE:,}).")
    _problems_box(problems, draft)


def _uploads() -> None:
    rev = ss[UPLOAD_REV]
    key = f"weights_upload@{rev}"
    st.file_uploader(
        "Trained weights",
        type=["safetensors", "pt", "pth", "bin", "ckpt"],
        key=key,
        on_change=_on_weights_upload,
        args=(key,),
        help="A state_dict (safetensors, or torch.save read with weights_only) holding a MixedAttention layer, "
        "alone or inside a whole model.",
    )
    weights = ss.get(WEIGHTS)
    if weights:
        st.caption(f"Using {ed.escape_markdown(weights['name'])} ({len(weights['state_dict'])} tensors).")
        if len(weights["prefixes"]) > 1:
            st.selectbox("Attention layer", weights["prefixes"], key="w_prefix")
        st.button("Forget the weights", on_click=_on_forget, args=(WEIGHTS,))
    key = f"cloud_upload@{rev}"
    st.file_uploader(
        "Point cloud",
        type=["npz", "npy", "csv", "txt", "xyz"],
        key=key,
        on_change=_on_cloud_upload,
        args=(key,),
        help=".npz with surface and volume (n, 3) arrays, .npy (n, 3), or x,y,z text. Used by point_cloud inputs.",
    )
    cloud = ss.get(CLOUD)
    if cloud:
        st.caption(f"Using {ed.escape_markdown(cloud['name'])} for point-cloud inputs.")
        st.button("Forget the point cloud", on_click=_on_forget, args=(CLOUD,))
    st.number_input(
        "Memory budget (MB, 0 = half the free memory)",
        min_value=0,
        step=256,
        key=BUDGET,
        help="Computations estimated to need more are refused with the estimate instead of running out of memory.",
    )


def _sidebar(draft: dict[str, Any], report: ScenarioReport) -> None:
    grouped = ed.problems_by_section(report.problems)
    st.header("Scenario")
    _source()
    _status(report)
    _problems_box(grouped["document"], draft)
    with st.expander("Token groups", expanded=True):
        _groups_editor(draft, grouped["groups"])
    with st.expander("Attention rules", expanded=True):
        _rules_editor(draft, grouped["rules"])
    with st.expander("Attention config", expanded=bool(grouped["attention"])):
        _attention_editor(draft, grouped["attention"])
    with st.expander("Run settings", expanded=bool(grouped["run"])):
        _run_editor(draft, grouped["run"])
    with st.expander("Trained weights & point cloud"):
        _uploads()


# ----------------------------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------------------------


def _mask_tab(ctx: Context) -> None:
    view = ctx.mask
    assert view is not None
    _chart(group_mask_figure(view.groups))
    st.caption(
        "Each block is a (query group, key group) pair: coloured where the rules let the queries attend, with the "
        "attended token pairs. KV-cache groups appear only as keys: they have no queries."
    )
    _chart(mask_figure(view.layout, view.pooled, view.rows, view.cols))
    st.caption(
        f"Token-level mask on {view.rows.bins:,} x {view.cols.bins:,} cells ({views.grid_note(view.rows, view.cols)}). "
        "A cell shows the share of its (query, key) pairs that are attended: 1 = all, 0 = none, in between where a "
        "cell straddles a group boundary or padding. White lines are group boundaries."
    )
    st.download_button(
        "Download the mask as PNG",
        data=lambda: map_png(views.mask_map(view.layout, view.pooled, view.rows, view.cols)),
        file_name="attention_mask.png",
        mime="image/png",
        on_click="ignore",
    )
    with st.expander("Attended blocks as a table"):
        st.dataframe(views.group_mask_table(view.groups), hide_index=True, width="stretch")


@st.fragment
def _weights_tab(ctx: Context) -> None:
    _guarded("Weights", _weights_view, ctx)


def _weights_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    result = _weights(ctx)
    if result is None:
        return
    layout, heads = ctx.mask.layout, ctx.scenario.attention.num_heads
    head_choices = views.head_options(heads, with_all=True)
    _ensure("v_head", head_choices, "mean")
    _ensure("v_pooling", ["mean", "max"], "mean")
    _ensure("v_colour", ["linear", "log"], "linear")
    ss.setdefault("v_shared", True)
    has_batch = ctx.scenario.run.batch_size > 1
    cols = st.columns([1, 1.4, 1, 1, 1.4] if has_batch else [1.4, 1, 1, 1.4], vertical_alignment="bottom")
    if has_batch:
        with cols[0]:
            batch = _batch_picker(ctx)
        cols = cols[1:]
    else:
        batch = 0
    head = cols[0].selectbox("Head", head_choices, format_func=views.head_label, key="v_head")
    pooling = cols[1].radio(
        "Pooling",
        ["mean", "max"],
        key="v_pooling",
        horizontal=True,
        help="mean: average weight of the pairs in a cell. max: the largest one (finds peaks).",
    )
    log_colour = cols[2].radio("Colour", ["linear", "log"], key="v_colour", horizontal=True) == "log"
    shared = cols[3].checkbox("Same colour scale for all heads", key="v_shared")
    zrange = views.head_colour_range(result, batch, pooling, log=log_colour) if shared else None
    zmin, zmax = zrange if zrange else (None, None)
    row = None
    if head == views.ALL_HEADS:
        shown = list(range(min(heads, MAX_GRID_HEADS)))
        if heads > MAX_GRID_HEADS:
            st.caption(f"Showing the first {MAX_GRID_HEADS} of {heads} heads; pick a head for the others.")
        grid = st.columns(2)
        for head_index, (values, rows, columns) in zip(
            shown, views.weight_maps(result, GRID_BINS, batch, shown, pooling), strict=True
        ):
            fig = heatmap(
                values,
                views.query_axis(layout, rows),
                views.key_axis(layout, columns),
                f"head {head_index} ({views.grid_note(rows, columns)})",
                zmin=zmin,
                zmax=zmax,
                log=log_colour,
                colorbar_title="weight",
            )
            fig.update_layout(height=460)
            with grid[head_index % 2]:
                _chart(fig)
    else:
        spec = views.weights_map(result, layout, DISPLAY_BINS, batch, head, pooling, log=log_colour, zrange=zrange)
        st.markdown("**Query token** (its row is outlined on the map; its exact weights are below)")
        row = _query_picker(ctx)
        fig = map_figure(spec)
        if row is not None:
            mark_query_row(fig, spec.grid[0].bin_of(row), spec.values.shape[1])
        _chart(fig)
        st.download_button(
            "Download this map as PNG",
            data=lambda: map_png(spec),
            file_name="attention_weights.png",
            mime="image/png",
            on_click="ignore",
        )
    st.caption(
        "Softmax weights pooled onto the grid: a cell shows the mean (or max) weight of the query-key pairs it "
        "covers, 0 where the rules block attention. Pooled values are averages, not sums: a query's row of exact "
        "weights sums to 1. The colour scale is "
        + ("shared by all heads and the head mean." if shared else "fitted to this map.")
    )
    if row is not None:
        run = ctx.run
        assert run is not None
        group, index = layout.query_group_at(row)
        values = views.row_weights(run, row, batch, head if head != views.ALL_HEADS else "mean")
        title = f"Exact weights of token {index:,} of {group.name} ({views.head_label(head)})"
        _chart(row_figure(values, layout, title))
        st.caption(
            f"Exact, not pooled: query row {row:,} against all {layout.n_keys:,} keys; 0 where the rules block "
            "attention."
        )


@st.fragment
def _statistics_tab(ctx: Context) -> None:
    _guarded("Statistics", _statistics_view, ctx)


def _statistics_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    result = _weights(ctx)
    if result is None:
        return
    layout = ctx.mask.layout
    choices = views.head_options(ctx.scenario.attention.num_heads)
    _ensure("v_stats_head", choices, "mean")
    left, right = st.columns([1, 3] if ctx.scenario.run.batch_size > 1 else [3, 1])
    with right:
        batch = _batch_picker(ctx)
    head = left.selectbox("Head", choices, format_func=views.head_label, key="v_stats_head")
    matrix = views.mass_matrix(result, batch, head)
    query_names = [g.name for g in layout.query_groups]
    key_names = [g.name + (" (cached)" if g.cached else "") for g in layout.groups]
    _chart(mass_figure(matrix, query_names, key_names, f"Attention mass between groups ({views.head_label(head)})"))
    st.caption(
        "Row = query group, column = key group: the mean share of a query's attention that lands in each key "
        "group (each row sums to 1)."
    )
    st.markdown("**Per query group**")
    st.dataframe(views.query_group_table(result, layout, batch, head), hide_index=True, width="stretch")
    st.caption(
        "Entropy of a query's weights in nats, averaged over the group; it reaches max entropy = log(keys "
        "attended) when attention is uniform. Top-k mass: the share of attention on a query's k largest keys."
    )
    st.markdown("**Most-attended key tokens**")
    st.dataframe(views.top_keys(result, layout, 20, batch, head), hide_index=True, width="stretch")
    st.caption("Attention received: the sum of the weights all queries give the key token.")


def _cost_tab(ctx: Context) -> None:
    assert ctx.scenario is not None
    run = ctx.run
    cost = run.cost() if run is not None else compare.scenario_cost(ctx.scenario)
    st.dataframe(views.cost_table(cost), hide_index=True, width="stretch")
    st.caption(
        "Analytic, from the groups alone. The per-pattern path (MixedAttention) computes only the attended blocks; "
        "one dense masked SDPA call would need the full (queries x keys) mask and compute every pair."
    )
    st.subheader("Measured backends")
    if _needs_run(ctx) is None or run is None:
        return
    token = f"backends:{ctx.run_key}"
    if token not in ss[REQUESTED]:
        st.caption(
            f"Times per-pattern MixedAttention, one dense masked SDPA call and FlexAttention on {run.device} and "
            "checks that their outputs agree. Takes seconds; FlexAttention compiles its kernel the first time."
        )
        st.button("Measure backends", on_click=_on_request, args=(token,), type="primary")
        return
    with st.status("Measuring backends; FlexAttention is compiling its kernel the first time…", expanded=True) as box:
        with _progress("Timing…") as report:
            timings = run.backends(progress=report)
        box.update(label="Backends measured", state="complete", expanded=False)
    st.dataframe(views.backend_table(timings), hide_index=True, width="stretch")
    _chart(backend_figure(timings))
    st.caption("max |diff|: the largest difference of a backend's attention output from per-pattern MixedAttention.")


def _kv_cache_tab(ctx: Context) -> None:
    assert ctx.mask is not None
    if not ctx.mask.layout.has_cache:
        st.info(
            "This scenario has no KV-cache group. A group with size null (tick “from KV cache” in the groups table) "
            "is not part of the input: an earlier anchor pass computes its keys and values, and the query pass "
            "reads them from the cache. Only the input groups get queries."
        )
        st.button("Load the KV-cache example", on_click=_on_load_example, args=("kv_cache",))
        return
    run = _needs_run(ctx)
    if run is None or not _gate(ctx, "kv", run.forward_estimate(), "Run both passes"):
        return
    with _progress("Running the anchor pass, the query pass and one full pass…") as report:
        check = run.kv_cache_check(progress=report)
    assert check is not None
    first, second, single = st.columns(3)
    with first, st.container(border=True):
        st.markdown("**Pass 1 — anchor pass**")
        st.metric("time", f"{check.anchor_pass_seconds * 1000:.1f} ms")
        st.caption(
            "Every group is input, the cached ones with their simulated tokens; the module returns their keys and "
            f"values as the cache: {', '.join(check.cached_groups)}."
        )
    with second, st.container(border=True):
        st.markdown("**Pass 2 — query pass**")
        st.metric("time", f"{check.query_pass_seconds * 1000:.1f} ms")
        st.caption(f"Only {', '.join(check.query_groups)} are input; their queries read the cached keys and values.")
    with single, st.container(border=True):
        st.markdown("**Reference — one pass**")
        st.metric("time", f"{check.single_pass_seconds * 1000:.1f} ms")
        st.caption("All groups in one pass, no cache; its outputs for the query groups are the reference.")
    if check.equal:
        st.success(
            f"Equal: the two-pass outputs match the single pass (max |difference| {check.max_abs_diff:.2e}, "
            "tolerance 1e-4)."
        )
    else:
        st.error(
            f"Different: the two-pass outputs differ from the single pass by up to {check.max_abs_diff:.2e} "
            "(tolerance 1e-4)."
        )
    for note in check.notes:
        st.caption(note)


@st.fragment
def _spatial_tab(ctx: Context) -> None:
    _guarded("Spatial", _spatial_view, ctx)


_COLOUR_MODES = {
    "group": "group",
    "query": "attention from a query token",
    "received": "attention each key receives",
}


def _spatial_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    run = _needs_run(ctx)
    if run is None:
        return
    layout = ctx.mask.layout
    if ctx.scenario.run.inputs == "random":
        st.info(
            "Inputs are random: token positions are uniform in a box. Set Run settings → Inputs to point_cloud to "
            "place the tokens on the sample car or on your uploaded point cloud."
        )
    elif ss.get(CLOUD):
        cloud = ss[CLOUD]
        st.caption(f"Positions from your point cloud {ed.escape_markdown(cloud['name'])}.")
        short = short_of_points(layout, cloud["arrays"])
        if short:
            st.warning(
                f"Your point cloud has fewer points than {', '.join(short)} need, so points of those groups are "
                "reused (several tokens share a position). Upload more points or use smaller groups."
            )
    _ensure("v_colour_by", list(_COLOUR_MODES), "group")
    left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    mode = left.radio(
        "Colour tokens by",
        list(_COLOUR_MODES),
        format_func=_COLOUR_MODES.__getitem__,
        key="v_colour_by",
        horizontal=True,
    )
    with middle:
        batch = _batch_picker(ctx)
    head: Any = "mean"
    if mode != "group":
        choices = views.head_options(ctx.scenario.attention.num_heads)
        _ensure("v_spatial_head", choices, "mean")
        head = right.selectbox("Head", choices, format_func=views.head_label, key="v_spatial_head")
    positions = views.token_positions(run, batch)
    seed = ctx.scenario.run.seed
    if mode == "group":
        fig = point_cloud_figure(positions, "Token positions by group", labels=views.key_labels(layout), seed=seed)
        caption = "Every token on the key axis (KV-cache groups included) at its position."
    elif mode == "query":
        row = _query_picker(ctx)
        if row is None:
            return
        group, index = layout.query_group_at(row)
        fig = point_cloud_figure(
            positions,
            f"Attention from token {index:,} of {group.name}",
            values=views.row_weights(run, row, batch, head),
            muted=~views.attended_keys(layout, row),
            highlight=views.query_key_column(layout, row),
            seed=seed,
        )
        caption = (
            "Exact weights the selected query token (diamond) gives the key tokens its rules let it attend; "
            "the other keys are grey."
        )
    else:
        result = _weights(ctx)
        if result is None:
            return
        fig = point_cloud_figure(
            positions,
            "Attention received by each key token",
            values=views.received_weights(result, batch, head),
            seed=seed,
        )
        caption = "Sum of the weights all query tokens give each key token."
    _chart(fig)
    st.caption(caption)


@st.fragment
def _compare_tab(ctx: Context) -> None:
    _guarded("Compare", _compare_view, ctx)


def _compare_view(ctx: Context) -> None:
    assert ctx.scenario is not None and ctx.mask is not None
    _ensure("v_cmp_source", ["example", "text"], "example")
    source = st.radio(
        "Compare the current scenario with",
        ["example", "text"],
        key="v_cmp_source",
        horizontal=True,
        format_func={"example": "an example", "text": "pasted YAML or JSON"}.__getitem__,
    )
    if source == "example":
        _ensure("v_cmp_preset", [p.key for p in PRESETS], "full_self_attention")
        key = st.selectbox(
            "Example", [p.key for p in PRESETS], format_func=PRESET_TITLES.__getitem__, key="v_cmp_preset"
        )
        other = _preset(key)
    else:
        ss.setdefault("v_cmp_text", "")
        text = st.text_area(
            "Scenario to compare with", key="v_cmp_text", height=220, placeholder="attention: ...\ntoken_specs: ..."
        )
        if not text.strip():
            st.info("Paste a scenario (YAML or JSON), e.g. an export of another design, then press Ctrl+Enter.")
            return
        report = load_scenario_bytes(text.encode("utf-8", "surrogatepass"), name="comparison")
        if report.scenario is None:
            st.error("The pasted scenario is not valid:\n" + _problem_lines(report.problems))
            return
        other = report.scenario
    other_view = _mask_view(ed.scenario_key(other), other)
    left, right = st.columns(2)
    with left:
        st.markdown("**Current**")
        _chart(group_mask_figure(ctx.mask.groups), key="cmp_current")
    with right:
        st.markdown("**Other**")
        _chart(group_mask_figure(other_view.groups), key="cmp_other")
    difference = compare.mask_difference(ctx.mask.layout, other_view.layout, DISPLAY_BINS)
    if difference.values is None or difference.rows is None or difference.cols is None:
        st.info(difference.message)
    else:
        _chart(
            heatmap(
                difference.values,
                views.query_axis(ctx.mask.layout, difference.rows),
                views.key_axis(ctx.mask.layout, difference.cols),
                f"Mask difference: other − current ({views.grid_note(difference.rows, difference.cols)})",
                colorscale="RdBu",
                zmin=-1,
                zmax=1,
                colorbar_title="other − current",
            )
        )
        st.caption(difference.message + " Axes are labelled with the current scenario's groups.")
    st.markdown("**Cost**")
    st.dataframe(
        compare.cost_difference(compare.scenario_cost(ctx.scenario), compare.scenario_cost(other)),
        hide_index=True,
        width="stretch",
    )


def _text_tab(ctx: Context) -> None:
    st.caption(
        "The whole scenario as text. Edit it and press Ctrl+Enter (or “Apply”): the editors and views follow. "
        "Text that cannot be read stays here with the reason, and the scenario keeps its last readable state."
    )
    ss.setdefault(TEXT_FORMAT, "yaml")
    st.radio(
        "Format",
        ["yaml", "json"],
        key=TEXT_FORMAT,
        horizontal=True,
        on_change=_on_text_format,
        format_func=str.upper,
        help="Switching rewrites the text from the current scenario.",
    )
    if TEXT not in ss:
        ss[TEXT] = ed.draft_to_text(ctx.draft, ss[TEXT_FORMAT])
    st.text_area("Scenario text", key=TEXT, height=520, on_change=_on_text)
    left, right, _ = st.columns([1, 2, 3])
    left.button("Apply", on_click=_on_text, type="primary", width="stretch")
    right.button(
        "Rewrite from the scenario",
        on_click=_on_text_format,
        width="stretch",
        help="Discard unapplied text and show the current scenario again.",
    )
    if ss.get(TEXT_PROBLEMS):
        st.error("The text could not be read, so the scenario was not changed:\n" + _problem_lines(ss[TEXT_PROBLEMS]))
    elif ctx.report.problems:
        _problems_box(ctx.report.problems, ctx.draft)
    else:
        st.success("The text is a valid scenario.")


def _export_tab(ctx: Context) -> None:
    scenario = ctx.scenario
    assert scenario is not None
    if not ctx.edited_is_valid:
        st.warning("The edited scenario has problems; this exports the last valid one.")
    json_text, yaml_text, python_text = dump_json(scenario), dump_yaml(scenario), dump_python(scenario)
    st.subheader("Files")
    files = st.columns(3)
    for column, (label, data, name, mime) in zip(
        files,
        (
            ("JSON", json_text, "scenario.json", "application/json"),
            ("YAML", yaml_text, "scenario.yaml", "application/yaml"),
            ("Python snippet", python_text, "scenario.py", "text/x-python"),
        ),
        strict=True,
    ):
        column.download_button(
            f"Download {label}", data=data, file_name=name, mime=mime, on_click="ignore", width="stretch"
        )
    with st.expander("Preview the files"):
        preview_yaml, preview_json, preview_python = st.tabs(["YAML", "JSON", "Python"])
        preview_yaml.code(yaml_text, language="yaml")
        preview_json.code(json_text, language="json")
        preview_python.code(python_text, language="python")
    st.subheader("Shareable link")
    token = share.encode_share(scenario)
    url = share.share_url(st.context.url or "http://localhost:8501/", token)
    st.code(url, language=None, wrap_lines=True)
    st.caption(
        f"Opening this link restores the scenario (compressed into the “{share.SHARE_PARAM}” parameter, "
        f"{len(token):,} characters). Uploaded weights and point clouds are not part of it."
    )
    st.button("Put the link in the address bar", on_click=_on_share, args=(token,))
    st.subheader("Images")
    view = ctx.mask
    assert view is not None
    st.download_button(
        "Mask as PNG",
        data=lambda: map_png(views.mask_map(view.layout, view.pooled, view.rows, view.cols)),
        file_name="attention_mask.png",
        mime="image/png",
        on_click="ignore",
    )
    st.caption("The weights map as shown (head, pooling, colour) downloads from the Weights tab.")


_RENDER: dict[str, Callable[[Context], None]] = {
    "Mask": _mask_tab,
    "Weights": _weights_tab,
    "Statistics": _statistics_tab,
    "Cost": _cost_tab,
    "KV cache": _kv_cache_tab,
    "Spatial": _spatial_tab,
    "Compare": _compare_tab,
    "Edit as text": _text_tab,
    "Export": _export_tab,
}
_FRAGMENTS = {"Weights", "Statistics", "Spatial", "Compare"}


def _main(ctx: Context) -> None:
    st.title("Noether attention explorer")
    for level, text in ss.get(FLASH, []):
        getattr(st, level)(text)
    ss[FLASH] = []
    if ctx.scenario is None:
        st.info("No valid scenario yet: add token groups and rules in the sidebar, or open the “Edit as text” tab.")
    else:
        assert ctx.mask is not None
        st.caption(views.scenario_summary(ctx.mask.layout, ctx.mask.groups))
        if not ctx.edited_is_valid:
            st.warning(
                "The edited scenario has problems (listed in the sidebar next to the settings). The views show the "
                "last valid scenario; running the edited one is paused until it is valid."
            )
        if ctx.run is not None:
            for note in ctx.run.notes:
                if note == ctx.run.choice.note:
                    st.warning(f"Device: {note}")
                else:
                    st.caption(f"Note: {note}")
        elif ctx.run_problems:
            st.error("The scenario cannot be prepared for running:\n" + _problem_lines(ctx.run_problems, ctx.draft))
    tabs = st.tabs(TABS, key=VIEW, on_change="rerun")
    for tab, name in zip(tabs, TABS, strict=True):
        if not tab.open:
            continue
        with tab:
            if ctx.scenario is None and name != "Edit as text":
                st.info("Nothing to show until the scenario is valid.")
            elif name in _FRAGMENTS:
                _RENDER[name](ctx)
            else:
                _guarded(name, _RENDER[name], ctx)


def main() -> None:
    _init()
    for key in PERSISTENT:
        if key in ss:
            ss[key] = ss[key]
    draft = ss[DRAFT]
    report = validate_scenario(draft)
    if report.ok:
        ss[ACTIVE] = report.scenario
    with st.sidebar:
        _sidebar(draft, report)
    _main(_prepare(draft, report))


main()
