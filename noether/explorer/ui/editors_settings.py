"""Sidebar editors of the attention config and the run settings."""

from typing import Any

import streamlit as st

from noether.explorer import editing as ed
from noether.explorer.devices import available_devices, device_label, device_options
from noether.explorer.problems import Problem
from noether.explorer.scenario import DEFAULT_CACHE_SIZE
from noether.explorer.ui.state import FORM_REV, on_field, on_padding, ss
from noether.explorer.ui.widgets import problems_box


def attention_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
    rev = ss[FORM_REV]
    attention = ed.section(draft, "attention")

    def field(name: str) -> tuple[tuple[tuple[str, ...], str], str]:
        key = f"{name}@{rev}"
        return (("attention", name), key), key

    left, right = st.columns(2)
    args, key = field("hidden_dim")
    left.number_input(
        "hidden_dim", value=ed.as_int(attention.get("hidden_dim"), 128), step=1, key=key, on_change=on_field, args=args
    )
    args, key = field("num_heads")
    right.number_input(
        "num_heads", value=ed.as_int(attention.get("num_heads"), 4), step=1, key=key, on_change=on_field, args=args
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
        st.checkbox(label, value=ed.as_bool(attention.get(name), default), key=key, on_change=on_field, args=args)
    args, key = field("dropout")
    st.number_input(
        "dropout",
        value=ed.as_float(attention.get("dropout"), 0.0),
        step=0.05,
        format="%.2f",
        key=key,
        on_change=on_field,
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
        on_change=on_field,
        args=args,
    )
    problems_box(problems, draft)


def run_editor(draft: dict[str, Any], problems: list[Problem]) -> None:
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
        on_change=on_field,
        args=args,
    )
    args, key = field("dtype")
    dtype = ed.choice(run.get("dtype", "float32"), ed.DTYPES, "float32")
    st.selectbox("dtype", ed.DTYPES, index=ed.DTYPES.index(dtype), key=key, on_change=on_field, args=args)
    left, right = st.columns(2)
    args, key = field("batch_size")
    left.number_input(
        "batch size", value=ed.as_int(run.get("batch_size"), 1), step=1, key=key, on_change=on_field, args=args
    )
    args, key = field("seed")
    right.number_input("seed", value=ed.as_int(run.get("seed"), 0), step=1, key=key, on_change=on_field, args=args)
    # Two-way choices whose first option is the default.
    for name, label, options, help_text in (
        (
            "inputs",
            "Inputs",
            ("random", "point_cloud"),
            "random: seeded Gaussian features, positions uniform in a box. point_cloud: sin-cos features of "
            "points on the sample car (or your uploaded cloud).",
        ),
        (
            "weights",
            "Weights",
            ("init", "spatial"),
            "init: the module's seeded initialisation. spatial: identity Q/K projections, so attention "
            "follows feature similarity (proximity for point-cloud inputs). Trained weights replace both.",
        ),
    ):
        args, key = field(name)
        value = ed.choice(run.get(name, options[0]), options, options[0])
        st.radio(
            label,
            options,
            index=options.index(value),
            horizontal=True,
            key=key,
            on_change=on_field,
            args=args,
            help=help_text,
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
                on_change=on_padding,
                args=(row.name, key),
            )
    st.caption(f"The tokens column of a KV-cache group sets its cached tokens (default {DEFAULT_CACHE_SIZE:,}).")
    problems_box(problems, draft)
