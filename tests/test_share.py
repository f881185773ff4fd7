"""Share links: every example round-trips through a link; damaged, oversized and invalid links come back as
problems."""

import base64
import zlib

import pytest

from noether.explorer import share
from noether.explorer.presets import PRESETS, load_preset
from noether.explorer.scenario import scenario_to_dict

LINK_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("key", [p.key for p in PRESETS])
def test_share_links_round_trip(key):
    scenario = load_preset(key)
    token = share.encode_share(scenario)
    assert len(token) < 2000 and set(token) <= LINK_CHARACTERS
    report = share.decode_share(token)
    assert report.ok and scenario_to_dict(report.scenario) == scenario_to_dict(scenario)
    url = share.share_url("http://host:8501/app?old=1#frag", token)
    assert url == f"http://host:8501/app?{share.SHARE_PARAM}={token}"


def test_links_leave_generated_rules_out():
    text = zlib.decompress(base64.urlsafe_b64decode(share.encode_share(load_preset("self_anchor")) + "==")).decode()
    assert "attention_patterns" not in text and '"branches"' in text


def _token(data: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(data)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("", "empty"),
        ("abc$%", "characters"),
        ("A", "base64"),
        ("AAAA", "decompress"),
        (_token(b'{"attention": 1}')[:-6], "cut"),
        ("A" * (share.MAX_SHARE_CHARS + 1), "at most"),
        (_token(b" " * (share.MAX_SHARE_JSON_BYTES + 10)), "expands"),
        (_token(b"not json"), "JSON"),
        (_token(b'{"attention": {"hidden_dim": 8, "num_heads": 3}, "token_specs": [{"a": 1}]}'), "divisible"),
    ],
)
def test_bad_share_links_come_back_as_problems(token, words):
    report = share.decode_share(token)
    assert report.scenario is None and report.problems
    assert words in " ".join(str(p) for p in report.problems)
