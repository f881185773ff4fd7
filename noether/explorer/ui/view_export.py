"""The Export view: files, a shareable link and images of the last valid scenario."""

import streamlit as st

from noether.explorer import share, views
from noether.explorer.io import dump_json, dump_python, dump_yaml
from noether.explorer.png import map_png
from noether.explorer.ui.context import Context
from noether.explorer.ui.state import on_share


def render(ctx: Context) -> None:
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
    st.button("Put the link in the address bar", on_click=on_share, args=(token,))
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
