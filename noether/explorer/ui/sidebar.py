"""The sidebar: where the scenario comes from, its validation status, the editors and the uploads."""

from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer.io import MAX_SCENARIO_BYTES
from noether.explorer.presets import PRESETS, preset_description
from noether.explorer.problems import count
from noether.explorer.scenario import ScenarioReport
from noether.explorer.ui.editors_groups import groups_editor
from noether.explorer.ui.editors_rules import rules_editor
from noether.explorer.ui.editors_settings import attention_editor, run_editor
from noether.explorer.ui.state import (
    BUDGET,
    CLOUD,
    PRESET,
    PRESET_TITLES,
    UPLOAD_REV,
    WEIGHTS,
    on_cloud_upload,
    on_empty,
    on_forget,
    on_preset,
    on_upload,
    on_weights_upload,
    ss,
)
from noether.explorer.ui.widgets import problems_box


def _source() -> None:
    st.selectbox(
        "Example",
        [p.key for p in PRESETS],
        format_func=PRESET_TITLES.__getitem__,
        key=PRESET,
        on_change=on_preset,
        placeholder="Pick an example to load",
        help="Selecting an example replaces the current scenario.",
    )
    if ss[PRESET] is not None:
        st.caption(preset_description(ss[PRESET]))
    left, right = st.columns(2)
    left.button(
        "Reload example",
        on_click=on_preset,
        width="stretch",
        disabled=ss[PRESET] is None,
        help="Discard the edits and load the example again.",
    )
    right.button("Start empty", on_click=on_empty, width="stretch")
    key = f"upload@{ss[UPLOAD_REV]}"
    st.file_uploader(
        "Open a scenario file",
        type=["yaml", "yml", "json"],
        key=key,
        on_change=on_upload,
        args=(key,),
        max_upload_size=MAX_SCENARIO_BYTES // 2**20,
        help="YAML or JSON with attention, token_specs, attention_patterns and run (see the built-in examples); "
        f"at most {MAX_SCENARIO_BYTES // 2**20} MB.",
    )


def _status(report: ScenarioReport) -> None:
    errors = [p for p in report.problems if p.severity == "error"]
    if not errors:
        scenario = report.scenario
        assert scenario is not None
        warnings = len(report.problems)
        extra = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
        groups, rules = count(len(scenario.token_specs), "group"), count(len(scenario.patterns()), "rule")
        st.success(f"Valid: {groups}, {rules}{extra}.")
    else:
        st.error(
            f"{count(len(errors), 'problem')}, listed next to the settings below. Running is paused "
            "until they are fixed; the views keep showing the last valid scenario."
        )


def _uploads() -> None:
    rev = ss[UPLOAD_REV]
    key = f"weights_upload@{rev}"
    st.file_uploader(
        "Trained weights",
        type=["safetensors", "pt", "pth", "bin", "ckpt"],
        key=key,
        on_change=on_weights_upload,
        args=(key,),
        help="A state_dict (safetensors, or torch.save read with weights_only) holding a MixedAttention layer, "
        "alone or inside a whole model.",
    )
    weights = ss.get(WEIGHTS)
    if weights:
        st.caption(f"Using {ed.escape_markdown(weights['name'])} ({len(weights['state_dict'])} tensors).")
        if len(weights["prefixes"]) > 1:
            st.selectbox("Attention layer", weights["prefixes"], key="w_prefix")
        st.button("Forget the weights", on_click=on_forget, args=(WEIGHTS,))
    key = f"cloud_upload@{rev}"
    st.file_uploader(
        "Point cloud",
        type=["npz", "npy", "csv", "txt", "xyz"],
        key=key,
        on_change=on_cloud_upload,
        args=(key,),
        help=".npz with surface and volume (n, 3) arrays, .npy (n, 3), or x,y,z text. Used by point_cloud inputs.",
    )
    cloud = ss.get(CLOUD)
    if cloud:
        st.caption(f"Using {ed.escape_markdown(cloud['name'])} for point-cloud inputs.")
        st.button("Forget the point cloud", on_click=on_forget, args=(CLOUD,))
    st.number_input(
        "Memory budget (MB, 0 = half the free memory)",
        min_value=0,
        step=256,
        key=BUDGET,
        help="Computations estimated to need more are refused with the estimate instead of running out of memory.",
    )


def render_sidebar(draft: dict[str, Any], report: ScenarioReport) -> None:
    grouped = ed.problems_by_section(report.problems)
    st.header("Scenario")
    _source()
    _status(report)
    problems_box(grouped["document"], draft)
    with st.expander("Token groups", expanded=True):
        groups_editor(draft, grouped["groups"])
    with st.expander("Attention rules", expanded=True):
        rules_editor(draft, grouped["rules"])
    with st.expander("Attention config", expanded=bool(grouped["attention"])):
        attention_editor(draft, grouped["attention"])
    with st.expander("Run settings", expanded=bool(grouped["run"])):
        run_editor(draft, grouped["run"])
    with st.expander("Trained weights & point cloud"):
        _uploads()
