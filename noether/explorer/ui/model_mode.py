"""Model mode: open a capture (upload or the shipped demo), pick a recorded layer, and every view shows that layer
with its recorded inputs and weights. The single-layer mode is untouched."""

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer.capture_file import load_capture, load_capture_bytes
from noether.explorer.capture_layers import Layer, capture_layers, layer_run
from noether.explorer.capture_views import (
    MAX_UPLOAD_CAPTURE_BYTES,
    demo_capture_path,
    layer_label,
    layer_table,
    verify_all,
)
from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import ScenarioReport
from noether.explorer.ui.context import Context, cached_mask_view
from noether.explorer.ui.state import BUDGET, PRESET, UPLOAD_REV, flash, problem_lines, replace_draft, ss

MODE, CAPTURE, LAYER = "mode", "capture", "layer"
SINGLE, MODEL = "Single layer", "Model"
MODES = (SINGLE, MODEL)


@st.cache_resource(max_entries=4, show_spinner="Preparing the layer with its recorded inputs and weights…")
def prepared_layer_run(run_key: str, _layer: Layer, _budget_mb: float | None) -> ExplorerRun | list[Problem]:
    try:
        return layer_run(_layer, memory_budget_mb=_budget_mb)
    except ExplorerError as exc:
        return exc.problems


def init_mode() -> None:
    ss.setdefault(MODE, SINGLE)


def _open(name: str, digest: str, capture: object) -> None:
    layers = capture_layers(capture)  # type: ignore[arg-type]
    ss[CAPTURE] = {"name": name, "digest": digest, "capture": capture, "layers": layers, "statuses": None}
    explorable = [layer.id for layer in layers if layer.explorable]
    ss[LAYER] = explorable[0] if explorable else layers[0].id
    flash("success", f"Opened the capture {ed.escape_markdown(name)}: {len(layers)} recorded calls.")


def on_capture_upload(key: str) -> None:
    upload = ss.get(key)
    if upload is None:
        return
    ss[UPLOAD_REV] += 1
    data = upload.getvalue()
    try:
        capture = load_capture_bytes(data, name=upload.name, max_bytes=MAX_UPLOAD_CAPTURE_BYTES)
    except ExplorerError as exc:
        flash("error", f"{ed.escape_markdown(upload.name)} could not be opened:\n" + problem_lines(exc.problems))
        return
    _open(upload.name, ed.digest(data), capture)


def on_demo_capture() -> None:
    path = demo_capture_path()
    if path is None:
        return
    try:
        capture = load_capture(path)
    except ExplorerError as exc:
        flash("error", "The demo capture could not be opened:\n" + problem_lines(exc.problems))
        return
    _open("the demo capture", f"demo:{path.stat().st_mtime_ns}:{path.stat().st_size}", capture)


def on_forget_capture() -> None:
    ss.pop(CAPTURE, None)


def on_edit_layer() -> None:
    """Copy the layer's scenario into the single-layer editors (recorded inputs and weights stay behind)."""
    layer = current_layer()
    if layer is None or layer.scenario is None:
        return
    ss[PRESET] = None
    replace_draft(ed.draft_from_scenario(layer.scenario))
    ss[MODE] = SINGLE
    flash("info", f"Editing the scenario of {layer.id}; it runs on generated inputs and initial weights here.")


def current_layer() -> Layer | None:
    opened = ss.get(CAPTURE)
    if not opened:
        return None
    return next((layer for layer in opened["layers"] if layer.id == ss.get(LAYER)), None)


def render_model_sidebar() -> None:
    st.header("Model")
    key = f"capture_upload@{ss[UPLOAD_REV]}"
    st.file_uploader(
        "Open a capture",
        type=["safetensors"],
        key=key,
        on_change=on_capture_upload,
        args=(key,),
        # Without it the widget offers the server-wide limit (2 GB, for checkpoints) and the reader then refuses.
        max_upload_size=MAX_UPLOAD_CAPTURE_BYTES // 2**20,
        help="A .capture.safetensors file recorded with capture_attention(...).save(path) "
        f"(up to {MAX_UPLOAD_CAPTURE_BYTES // 2**20} MB here; larger ones work with the command line).",
    )
    demo = demo_capture_path()
    st.button(
        "Open the demo capture",
        on_click=on_demo_capture,
        disabled=demo is None,
        help="A small AB-UPT recorded from upstream Noether." if demo else "This installation has no demo capture.",
    )
    opened = ss.get(CAPTURE)
    if not opened:
        st.info("Open a capture to explore a model layer by layer.")
        return
    if opened["statuses"] is None:
        with st.spinner("Recomputing every layer and comparing it with the recorded output…"):
            opened["statuses"] = verify_all(opened["layers"], opened["capture"], float(ss.get(BUDGET) or 0) or None)
    layers, statuses = opened["layers"], opened["statuses"]
    by_id = {layer.id: layer for layer in layers}
    st.caption(f"{ed.escape_markdown(opened['name'])}: {len(layers)} recorded calls.")
    st.selectbox(
        "Layer",
        [layer.id for layer in layers],
        key=LAYER,
        format_func=lambda layer_id: layer_label(by_id[layer_id], statuses.get(layer_id)),
        help="Path of the module in the model (#N: its N-th call), kind, query x key tokens, and the largest "
        "difference between the recomputed and the recorded output.",
    )
    mismatched = [s.verification.layer for s in statuses.values() if s.verification and not s.verification.ok]
    if mismatched:
        st.error(f"Recomputed output differs from the recording for: {', '.join(mismatched)}.")
    with st.expander("All recorded calls"):
        st.dataframe(layer_table(layers, statuses), hide_index=True, width="stretch")
    st.button("Forget the capture", on_click=on_forget_capture)
    st.number_input("Memory budget (MB, 0 = half the free memory)", min_value=0, step=256, key=BUDGET)


def prepare_model() -> Context:
    """The views' context for the chosen layer (no scenario while no capture or no explorable layer is chosen)."""
    layer = current_layer()
    empty = Context({}, ScenarioReport(None, []), None)
    if layer is None:
        return empty
    if not layer.explorable or layer.scenario is None:
        empty.run_problems = [Problem(f"layer '{layer.id}'", layer.reason)]
        return empty
    scenario = layer.scenario
    ctx = Context(ed.draft_from_scenario(scenario), ScenarioReport(scenario, []), scenario, from_capture=True)
    ctx.mask = cached_mask_view(ed.scenario_key(scenario), scenario)
    budget = float(ss.get(BUDGET) or 0)
    ctx.run_key = f"capture:{ss[CAPTURE]['digest']}:{layer.id}:{budget}"
    prepared = prepared_layer_run(ctx.run_key, layer, budget or None)
    if isinstance(prepared, ExplorerRun):
        ctx.run = prepared
    else:
        ctx.run_problems = prepared
    return ctx


def render_edit_as_text() -> None:
    """Model mode's "Edit as text": the layer's scenario comes from the capture; editing happens in Single layer."""
    layer = current_layer()
    st.info(
        "In Model mode the layer's scenario comes from the capture. Its text is in the Export tab; to change it, "
        "edit a copy in Single-layer mode (it then runs on generated inputs and initial weights)."
    )
    st.button("Edit this layer's scenario in Single-layer mode", on_click=on_edit_layer, disabled=layer is None)
