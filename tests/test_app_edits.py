"""The app never loses an edit and never says something untrue (AppTest): kind switches keep the rules, the format
switch keeps unapplied text, counts and tolerances are the real ones, a refused checkpoint is explained once."""

from typing import Any

import pytest
import torch
from app_helpers import clean, set_text, show, start, texts
from safetensors.torch import save as save_safetensors
from streamlit.testing.v1 import AppTest

from noether.explorer import editing as ed
from noether.explorer.io import MAX_SCENARIO_BYTES

pytestmark = pytest.mark.usefixtures("fresh_caches")


def kind_box(at: AppTest) -> Any:
    return next(box for box in at.sidebar.selectbox if box.label == "Kind")


def test_kind_round_trip_in_the_app_keeps_the_hand_written_rules():
    at = start("block_causal")
    rules = ed.rule_pairs(at.session_state["draft"])
    assert len(rules) > 1
    clean(kind_box(at).select("self_anchor").run())
    assert "kept aside" in texts(at.info)
    clean(kind_box(at).select("mixed").run())
    assert ed.rule_pairs(at.session_state["draft"]) == rules


def test_format_switch_keeps_unapplied_text():
    at = show(start(), "Edit as text")
    broken = "attention: [unclosed\n"
    set_text(at, broken)
    clean(at.radio(key="text_format").set_value("json").run())
    assert at.session_state["text_editor"] == broken
    assert at.session_state["text_format"] == "yaml"
    assert "not applied" in texts(at.warning)
    # Without unapplied text the switch rewrites the text in the other format.
    clean(next(b for b in at.button if b.label == "Rewrite from the scenario").click().run())
    clean(at.radio(key="text_format").set_value("json").run())
    assert at.session_state["text_editor"].lstrip().startswith("{")


def test_status_counts_in_the_right_number():
    at = start("joint_anchor")
    status = texts(at.sidebar.success)
    assert "1 rule." in status or "1 rule," in status, status
    assert "1 rules" not in status


def test_kv_cache_tab_states_the_tolerance_it_checks_with():
    at = show(start("kv_cache"), "KV cache")
    message = texts(at.success) + texts(at.error)
    assert "1e-04" not in message and "1e-4" not in message
    assert "tolerance 1e-05" in message


def test_scenario_uploader_states_the_scenario_limit():
    at = start()
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.max_upload_size_mb == MAX_SCENARIO_BYTES // 2**20
    assert "1 MB" in uploader.proto.help


def test_a_checkpoint_that_does_not_fit_is_explained_once_and_never_called_loaded():
    at = start("perceiver")
    hidden = at.session_state["active"].attention.hidden_dim
    wide = hidden * 2
    wrong = save_safetensors(
        {f"{n}.weight": torch.zeros(wide, wide) for n in ("q", "k", "v", "proj")}
        | {f"{n}.bias": torch.zeros(wide) for n in ("q", "k", "v", "proj")}
    )
    clean(at.get("file_uploader")[1].upload("wrong.safetensors", wrong).run())
    assert "Loaded" not in texts(at.success)
    errors = texts(at.error)
    assert errors.count(f"hidden_dim: {wide}") == 1, errors
