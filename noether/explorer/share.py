"""Share links: a scenario's canonical JSON, compressed, in one query parameter of the app's address."""

import base64
import binascii
import json
import re
import zlib
from urllib.parse import urlencode

from noether.explorer.editing import draft_from_scenario
from noether.explorer.io import load_scenario_bytes
from noether.explorer.problems import Problem
from noether.explorer.scenario import Scenario, ScenarioReport

SHARE_PARAM = "scenario"
MAX_SHARE_CHARS = 32_768
"""Longest accepted link parameter; real scenarios compress to a few hundred characters."""
MAX_SHARE_JSON_BYTES = 256 * 1024
"""Most bytes a link may decompress to (stops zip bombs before they inflate)."""
_BASE64_URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def encode_share(scenario: Scenario) -> str:
    """Compact canonical JSON (generated rules left out), zlib-compressed, urlsafe base64 without padding."""
    text = json.dumps(draft_from_scenario(scenario), separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii").rstrip("=")


def _link_problem(message: str, hint: str = "Copy the whole link again from the Export tab.") -> ScenarioReport:
    return ScenarioReport(None, [Problem("link", message, hint)])


def decode_share(token: str) -> ScenarioReport:
    """The scenario a link parameter holds; a damaged, oversized or invalid one comes back as problems."""
    token = token.strip()
    if not token:
        return _link_problem("the scenario parameter is empty.")
    if len(token) > MAX_SHARE_CHARS:
        return _link_problem(
            f"the scenario parameter is {len(token):,} characters; links hold at most {MAX_SHARE_CHARS:,}."
        )
    if not _BASE64_URL.match(token):
        return _link_problem("the scenario parameter has characters a link never contains (it was cut or edited).")
    try:
        compressed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return _link_problem("the scenario parameter is not valid base64 (it was cut or edited).")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, MAX_SHARE_JSON_BYTES)
    except zlib.error:
        return _link_problem("the scenario parameter is damaged: it does not decompress (it was cut or edited).")
    if inflater.unconsumed_tail:
        return _link_problem(f"the scenario parameter expands to more than {MAX_SHARE_JSON_BYTES // 1024} KiB.")
    if not inflater.eof:
        return _link_problem("the scenario parameter is incomplete (the link was cut off).")
    return load_scenario_bytes(data, name="link.json", fmt="json")


def share_url(base_url: str, token: str) -> str:
    """The app's address with the scenario parameter (any query or fragment of ``base_url`` replaced)."""
    base = base_url.split("#")[0].split("?")[0]
    return f"{base}?{urlencode({SHARE_PARAM: token})}"
