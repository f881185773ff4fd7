"""Tests of noether.explorer.io: bounded parsing of scenario files, canonical exports, schema and upstream payload."""

import copy
import json
import math
import os
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import noether.explorer.io as scenario_io
import noether.explorer.io_yaml as scenario_yaml
import noether.modeling.modules.attention as modeling_attention
from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.explorer.capture_file import is_capture_name
from noether.explorer.io import (
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_NODES,
    MAX_SCENARIO_BYTES,
    dump_json,
    dump_python,
    dump_yaml,
    load_scenario_bytes,
    load_scenario_file,
    parse_document,
    scenario_json_schema,
    upstream_payload,
)
from noether.explorer.problems import errors
from noether.explorer.resources import examples_dir
from noether.explorer.scenario import Scenario, ScenarioReport, validate_scenario
from noether.modeling.functional.init import SUPPORTED_INIT_MODES

CORPUS = Path(__file__).parent / "corpus"
# Capture files (*.safetensors) share the corpus and its table; tests/test_capture_corpus.py reads them.
BAD_FILES = sorted(path for path in (CORPUS / "bad").iterdir() if not is_capture_name(path))
BAD_CAPTURES = sorted(path for path in (CORPUS / "bad").iterdir() if is_capture_name(path))
GOOD_FILES = sorted(path for path in (CORPUS / "good").iterdir() if not is_capture_name(path))
EXPECTED: dict[str, list[str]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
EXAMPLES = sorted(path for path in examples_dir().glob("*") if path.suffix in (".yaml", ".yml", ".json"))

VALID_FILES = GOOD_FILES + EXAMPLES
"""Our good corpus plus the example scenarios shipped in assets/examples."""


def file_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(scenario_json_schema())
TRICKY_NAMES = [
    "yes",
    "no",
    "null",
    "~",
    "1e3",
    "on",
    "off",
    "true",
    "0x1F",
    ".inf",
    "-",
    "a: b",
    "# not a comment",
    "'single'",
    '"double"',
    "back\\slash",
    "<script>alert(1)</script>",
    "&anchor",
    "*alias",
    "!tag",
    "{flow}",
    "[list]",
    "a, b",
    "Strömung_名前_😀",
    " leading space",
    "trailing space ",
    "line\nbreak",
    "tab\there",
    "nul\x00byte",
    "nel\x85sep\u2028x",
    "bom\ufeffinside",
    "@at",
    "%percent",
    "`tick`",
    "---",
    "...",
    "?",
    "a long name with  double  spaces " * 8,
    "x" * 300,
]


def text_of(report: ScenarioReport) -> str:
    return "\n".join(str(problem) for problem in report.problems)


def load_text(text: str, fmt: str) -> ScenarioReport:
    return load_scenario_bytes(text.encode("utf-8"), fmt=fmt)  # type: ignore[arg-type]


def minimal(**attention: Any) -> dict[str, Any]:
    return {
        "attention": {"hidden_dim": 16, "num_heads": 2, **attention},
        "token_specs": [{"points": 8}],
        "attention_patterns": [{"query_tokens": ["points"], "key_value_tokens": ["points"]}],
    }


# --------------------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------------------


def test_expectations_table_lists_exactly_the_bad_corpus():
    assert len(BAD_FILES) >= 30
    assert sorted(EXPECTED) == sorted(path.name for path in BAD_FILES + BAD_CAPTURES)


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda path: path.name)
def test_bad_file_is_refused_with_its_reasons(path: Path):
    report = load_scenario_file(path)
    assert report.scenario is None and not report.ok
    assert any(problem.severity == "error" for problem in report.problems)
    text = text_of(report)
    for expected in EXPECTED[path.name]:
        assert expected in text, f"{path.name}: {expected!r} not in:\n{text}"


@pytest.mark.parametrize("path", VALID_FILES, ids=file_id)
def test_good_file_loads_and_round_trips(path: Path):
    report = load_scenario_file(path)
    assert report.ok, text_of(report)
    assert report.scenario is not None
    assert_round_trips(report.scenario)


@pytest.mark.parametrize("path", VALID_FILES, ids=file_id)
def test_schema_accepts_valid_files_and_their_export(path: Path):
    SCHEMA_VALIDATOR.validate(yaml.safe_load(path.read_text(encoding="utf-8-sig")))
    report = load_scenario_file(path)
    assert report.scenario is not None, text_of(report)
    SCHEMA_VALIDATOR.validate(json.loads(dump_json(report.scenario)))


def test_schema_is_a_valid_schema_and_rejects_unknown_keys():
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    document = minimal()
    document["atention_patterns"] = []
    assert not validator.is_valid(document)
    assert not validator.is_valid({**minimal(), "token_specs": [{"a": 1, "b": 2}]})
    assert validator.is_valid({**minimal(), "token_specs": [{"a": None}, {"name": "b", "size": 3}]})
    assert validator.is_valid({**minimal(), "run": None}) and validate_scenario({**minimal(), "run": None}).ok


# --------------------------------------------------------------------------------------------------------------------
# Resource limits: refused with bounded work and memory
# --------------------------------------------------------------------------------------------------------------------
# Work is counted, not timed: bytes read, YAML nodes composed, node visits of the alias check and values constructed
# cannot change with the load of the machine, while an expansion of an alias bomb would show up in them at once.


@dataclass
class ParseWork:
    bytes_read: int = 0
    """Bytes the loader read from files."""
    nodes_composed: int = 0
    """YAML nodes built from the text (aliases count once: a reuse is not a new node)."""
    node_visits: int = 0
    """Visits of nodes by the checks on the composed node graph (alias bombs, depth, duplicate keys)."""
    values_constructed: int = 0
    """Python values built from YAML nodes."""
    peak_bytes: int = 0
    """Peak memory allocated through Python while loading."""


class _CountingFile:
    def __init__(self, handle: Any, work: ParseWork) -> None:
        self.handle, self.work = handle, work

    def __enter__(self) -> "_CountingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.work.bytes_read += len(data)
        return data


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> ParseWork:
    """Counters of the loader's work, filled in by every load in the test."""
    counted = ParseWork()
    compose_node = scenario_yaml._Limits.compose_node
    node_children = scenario_yaml._node_children
    construct_object = yaml.constructor.BaseConstructor.construct_object

    def counting_compose(self: Any, parent: Any, index: Any) -> Any:
        counted.nodes_composed += 1
        return compose_node(self, parent, index)

    def counting_children(node: Any) -> Any:
        counted.node_visits += 1
        return node_children(node)

    def counting_construct(self: Any, node: Any, deep: bool = False) -> Any:
        counted.values_constructed += 1
        return construct_object(self, node, deep)

    def counting_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> _CountingFile:
        return _CountingFile(open(path, mode, *args, **kwargs), counted)

    monkeypatch.setattr(scenario_yaml._Limits, "compose_node", counting_compose)
    monkeypatch.setattr(scenario_yaml, "_node_children", counting_children)
    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_object", counting_construct)
    monkeypatch.setattr(scenario_io, "open", counting_open, raising=False)
    return counted


def refused_within(action: Any, work: ParseWork, *, peak_limit: int) -> ScenarioReport:
    """Run ``action`` (a load that must be refused) and check its peak memory; the other counters are in ``work``."""
    tracemalloc.start()
    try:
        report = action()
        _, work.peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.scenario is None and report.problems
    assert work.peak_bytes < peak_limit, f"peak {work.peak_bytes / 2**20:.1f} MiB"
    return report


def test_work_counters_see_an_ordinary_load(tmp_path: Path, work: ParseWork):
    # The counters must count, or the bounds below would hold trivially.
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(minimal()), encoding="utf-8")
    assert load_scenario_file(path).ok
    assert work.bytes_read == path.stat().st_size
    assert work.nodes_composed > 5 and work.node_visits >= work.nodes_composed and work.values_constructed > 5


def test_fifty_megabyte_file_is_refused_by_its_size_without_reading_it(tmp_path: Path, work: ParseWork):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(50 * 2**20)  # sparse: no 50 MB written to disk
    report = refused_within(lambda: load_scenario_file(path), work, peak_limit=2**20)
    assert "50 MiB" in text_of(report) and "1 MiB" in text_of(report)
    assert work.bytes_read == 0 and work.nodes_composed == 0


def test_oversized_bytes_are_refused():
    report = load_scenario_bytes(b" " * (MAX_SCENARIO_BYTES + 1))
    assert "is 1.00 MiB (1,048,577 bytes); scenario files are limited to 1 MiB" in text_of(report)
    assert load_scenario_bytes(b" " * MAX_SCENARIO_BYTES).problems[0].message == "is empty."


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_device_file_is_read_only_up_to_the_limit(work: ParseWork):
    report = refused_within(lambda: load_scenario_file("/dev/zero"), work, peak_limit=8 * 2**20)
    assert "limited to 1 MiB" in text_of(report)
    assert work.bytes_read == MAX_SCENARIO_BYTES + 1 and work.nodes_composed == 0


def billion_laughs(levels: int, width: int) -> bytes:
    lines = ["attention:", '  lol0: &l0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"  lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    lines.append("token_specs: [{a: 8}]")
    return "\n".join(lines).encode()


def written_nodes(text: bytes) -> int:
    """Nodes and aliases the text writes out (parser events), before any alias is expanded."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    kinds = (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)
    return sum(isinstance(event, kinds) for event in yaml.parse(text, Loader=loader))


def assert_no_expansion(work: ParseWork, text: bytes) -> None:
    """Work linear in what the text writes out: each node composed and checked a bounded number of times, and not a
    single value built, however large the expansion of its aliases would be."""
    assert 0 < work.nodes_composed <= written_nodes(text), work
    assert work.node_visits <= 2 * work.nodes_composed, work
    assert work.values_constructed == 0, work


def test_alias_bomb_is_refused_with_bounded_work_and_memory(work: ParseWork):
    bomb = billion_laughs(levels=30, width=10)  # 10**30 values once expanded
    report = refused_within(lambda: load_scenario_bytes(bomb, name="bomb.yaml"), work, peak_limit=50 * 2**20)
    assert "more than 100,000 values" in text_of(report)
    assert_no_expansion(work, bomb)


@pytest.mark.slow  # composes 40,000 nodes under tracemalloc; the small bomb above covers the fast loop
def test_alias_bomb_of_maximal_size_is_refused_with_bounded_work_and_memory(work: ParseWork):
    # As many aliases as fit under the size limit, each referring to the previous level twice.
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 10_000)]
    bomb = "\n".join(lines).encode()
    assert len(bomb) < MAX_SCENARIO_BYTES
    report = refused_within(lambda: load_scenario_bytes(bomb, name="bomb.yaml"), work, peak_limit=50 * 2**20)
    assert "more than 100,000 values" in text_of(report) or "nested more than" in text_of(report)
    assert_no_expansion(work, bomb)


def test_long_alias_chain_is_refused_by_its_expanded_depth():
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DOCUMENT_DEPTH + 5)]
    report = load_scenario_bytes("\n".join(lines).encode(), name="chain.yaml")
    assert f"nested more than {MAX_DOCUMENT_DEPTH} levels" in text_of(report)


def test_small_aliases_are_fine():
    text = (
        "attention: {hidden_dim: 16, num_heads: 2}\n"
        "token_specs: [{a: 4}, {b: 4}]\n"
        "attention_patterns: [{query_tokens: &all [a, b], key_value_tokens: *all}]\n"
    )
    assert load_text(text, "yaml").ok


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_maximally_deep_document_is_refused_with_bounded_work_and_memory(fmt: str, work: ParseWork):
    depth = MAX_SCENARIO_BYTES // 2 - 8
    report = refused_within(
        lambda: load_scenario_bytes(("[" * depth + "]" * depth).encode(), fmt=fmt),  # type: ignore[arg-type]
        work,
        peak_limit=50 * 2**20,
    )
    assert "nested more than" in text_of(report)
    # YAML stops composing at the depth limit; JSON never reaches the YAML composer.
    assert work.nodes_composed <= MAX_DOCUMENT_DEPTH + 1 and work.values_constructed == 0


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@pytest.mark.slow
def test_too_many_values_are_refused(fmt: str):
    text = "[" + ", ".join(["0"] * (MAX_DOCUMENT_NODES + 10)) + "]"
    report = load_text(text, fmt)
    assert "more than 100,000 values" in text_of(report)


def test_missing_file_directory_and_impossible_path_are_problems(tmp_path: Path):
    assert "does not exist" in text_of(load_scenario_file(tmp_path / "nope.yaml"))
    assert "is a directory" in text_of(load_scenario_file(tmp_path))
    assert "cannot be read" in text_of(load_scenario_file(f"{tmp_path}/nul\x00.yaml"))


# --------------------------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------------------------


def test_format_is_sniffed_without_an_extension():
    document = minimal()
    assert load_scenario_bytes(json.dumps(document).encode(), name="scenario.txt").ok
    assert load_scenario_bytes(yaml.safe_dump(document).encode(), name="<stdin>").ok
    # Flow-style YAML starts like JSON but is not JSON.
    assert load_scenario_bytes(
        b"{attention: {hidden_dim: 8, num_heads: 2}, token_specs: [{a: 1}], "
        b"attention_patterns: [{query_tokens: [a], key_value_tokens: [a]}]}"
    ).ok


def test_explicit_format_wins_over_the_extension():
    report = load_scenario_bytes(b"attention: {hidden_dim: 8}", name="x.yaml", fmt="json")
    assert "not valid JSON" in text_of(report)


def test_json_errors_carry_line_and_column():
    report = load_scenario_bytes(b'{\n  "attention": {\n    "hidden_dim": 8,,\n', name="x.json")
    assert report.problems[0].where == "line 3, column 21"


def test_parse_document_returns_what_it_could_read():
    invalid = "attention: {hidden_dim: 8, num_heads: 3}\ntoken_specs: [{a: on}]\n"
    document, problems = parse_document(invalid, name="x.yaml")
    assert document == {"attention": {"hidden_dim": 8, "num_heads": 3}, "token_specs": [{"a": True}]}
    assert [p.severity for p in problems] == ["warning"] and "'on' is read as the boolean true" in problems[0].message
    assert parse_document(invalid.encode(), name="x.yaml") == (document, problems)
    assert not load_scenario_bytes(invalid.encode(), name="x.yaml").ok
    assert parse_document("null", name="x.json") == (None, [])  # readable, just not a mapping
    for unreadable in ("attention: [", "when: 2024-01-01", "", "\ud800: 1", "[" * 100 + "]" * 100):
        document, problems = parse_document(unreadable)
        assert document is None and errors(problems), unreadable


def test_null_documents_are_refused_as_no_mapping():
    for text, fmt in (("null", "json"), ("~\n", "yaml")):
        report = load_text(text, fmt)
        assert report.scenario is None and "must be a mapping" in text_of(report)


def test_yaml_specials_as_names_get_a_quoting_hint():
    report = load_text("attention: {hidden_dim: 8, num_heads: 2}\ntoken_specs: [{name: null, size: 3}]\n", "yaml")
    assert "quote names" in text_of(report)


def test_yaml_values_json_cannot_hold_are_refused():
    report = load_text(yaml.safe_dump(minimal()) + "x: !!binary aGVsbG8=\n", "yaml")
    assert "YAML bytes value" in text_of(report)
    report = load_text(yaml.safe_dump(minimal(dropout=0.5)).replace("0.5", ".nan"), "yaml")
    assert "attention.dropout" in text_of(report) and "finite number" in text_of(report)


def test_same_scenario_in_different_spellings_exports_identically():
    explicit = minimal()
    shorthand = {**minimal(), "token_specs": [{"points": 8}]}
    explicit["token_specs"] = [{"name": "points", "size": 8}]
    texts = {
        dump_yaml(load_scenario_bytes(json.dumps(explicit).encode(), fmt="json").scenario),  # type: ignore[arg-type]
        dump_yaml(load_scenario_bytes(yaml.safe_dump(shorthand).encode(), fmt="yaml").scenario),  # type: ignore[arg-type]
    }
    assert len(texts) == 1


# --------------------------------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------------------------------


def assert_round_trips(scenario: Scenario) -> None:
    """JSON and YAML exports re-import to the same scenario and re-export byte-identically."""
    for fmt, dump in (("json", dump_json), ("yaml", dump_yaml)):
        text = dump(scenario)
        assert text.endswith("\n")
        report = load_text(text, fmt)
        assert report.ok, f"{fmt} export does not re-import:\n{text_of(report)}\n{text}"
        assert report.scenario is not None
        assert dump(report.scenario) == text
        assert dump_json(report.scenario) == dump_json(scenario)


def tricky_scenario() -> Scenario:
    specs = [{"name": name, "size": 2 + index} for index, name in enumerate(TRICKY_NAMES)]
    half = len(TRICKY_NAMES) // 2
    report = validate_scenario(
        {
            "attention": {"hidden_dim": 8, "num_heads": 2, "comment": "<b>note</b>: 'x'"},
            "token_specs": specs,
            "attention_patterns": [
                {"query_tokens": TRICKY_NAMES[:half], "key_value_tokens": TRICKY_NAMES},
                {"query_tokens": TRICKY_NAMES[half:], "key_value_tokens": TRICKY_NAMES[::-1]},
            ],
            "run": {"padding": {TRICKY_NAMES[0]: 1}},
        }
    )
    assert report.scenario is not None, text_of(report)
    return report.scenario


def test_tricky_names_round_trip_through_json_and_yaml():
    assert_round_trips(tricky_scenario())


def test_exports_are_canonical():
    scenario = tricky_scenario()
    assert dump_json(scenario) == dump_json(scenario.model_copy(deep=True))
    assert dump_yaml(scenario) == dump_yaml(scenario.model_copy(deep=True))
    assert dump_python(scenario) == dump_python(scenario.model_copy(deep=True))
    data = json.loads(dump_json(scenario))
    assert list(data) == ["attention", "token_specs", "attention_patterns", "run"]


def test_yaml_export_writes_groups_in_flow_style():
    report = load_scenario_file(CORPUS / "good" / "anchor_cache.yaml")
    assert report.scenario is not None
    text = dump_yaml(report.scenario)
    assert "- {name: surface_anchors, size: null}" in text
    assert "query_tokens: [surface_anchors, surface_queries]" in text


@pytest.mark.parametrize("path", VALID_FILES, ids=file_id)
def test_python_export_compiles_and_quotes_names(path: Path):
    report = load_scenario_file(path)
    assert report.scenario is not None
    code = dump_python(report.scenario)
    compile(code, path.name, "exec")
    for spec in report.scenario.token_specs:
        assert repr(spec.name) in code


@pytest.mark.slow
def test_python_export_runs(tmp_path: Path):
    """Exec the snippets in a fresh interpreter: the markup names stay strings, cached groups use two passes."""
    markup = "<script>alert(1)</script>"
    mixed = {
        "attention": {"hidden_dim": 12, "num_heads": 2, "use_rope": True},
        "token_specs": [{"volume_anchors": None}, {"tail_cache": None}, {markup: 5}, {'it\'s "x"': 3}],
        "attention_patterns": [
            {"query_tokens": ["volume_anchors", "tail_cache"], "key_value_tokens": ["volume_anchors"]},
            {"query_tokens": [markup, 'it\'s "x"'], "key_value_tokens": ["volume_anchors", "tail_cache"]},
        ],
        "run": {"device": "cpu", "batch_size": 2, "kv_cache_sizes": {"volume_anchors": 6, "tail_cache": 4}},
    }
    anchor = {
        "attention": {"kind": "cross_anchor", "hidden_dim": 6, "num_heads": 3, "branches": ["a", "b"], "my-x": 1},
        "token_specs": [{"a_anchors": 4}, {"a_queries": 2}, {"b_anchors": 3}],
        "run": {"device": "cpu", "padding": {"a_anchors": 1}},
    }
    scripts = []
    for index, document in enumerate((mixed, anchor)):
        report = validate_scenario(document)
        assert report.scenario is not None, text_of(report)
        script = tmp_path / f"snippet{index}.py"
        script.write_text(dump_python(report.scenario), encoding="utf-8")
        scripts.append(str(script))
    runner = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='__main__')\n"
    result = subprocess.run(
        [sys.executable, "-c", runner, *scripts], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["output shape: (2, 8, 12)", "output shape: (1, 9, 6)"]


def test_python_export_of_cached_groups_explains_the_anchor_pass():
    report = load_scenario_file(CORPUS / "good" / "anchor_cache.yaml")
    assert report.scenario is not None
    code = dump_python(report.scenario)
    assert "kv_cache" in code and "anchor pass" in code and "Pass 2" in code


@pytest.mark.parametrize("path", VALID_FILES, ids=file_id)
def test_upstream_payload_builds_the_upstream_models(path: Path):
    report = load_scenario_file(path)
    assert report.scenario is not None
    assert_upstream_payload_builds(report.scenario)


def assert_upstream_payload_builds(scenario: Scenario) -> None:
    payload = upstream_payload(scenario)
    json.dumps(payload)  # plain data only
    specs = [TokenSpec(**item) for item in payload["token_specs"]]
    patterns = [AttentionPattern(**item) for item in payload["attention_patterns"]]
    config = getattr(modeling_attention, payload["config_class"])(**payload["attention"])
    assert hasattr(modeling_attention, payload["module_class"])
    assert [(s.name, s.size) for s in specs] == [(s.name, s.size) for s in scenario.token_specs]
    assert [list(p.query_tokens) for p in patterns] == [list(p.query_tokens) for p in scenario.patterns()]
    assert config.hidden_dim == scenario.attention.hidden_dim
    assert config.num_heads == scenario.attention.num_heads
    assert "kind" not in payload["attention"]


# --------------------------------------------------------------------------------------------------------------------
# Property tests: bad input never raises; valid scenarios round-trip
# --------------------------------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["attention", "token_specs", "attention_patterns", "run", "kind", "mixed", "hidden_dim", "a"]),
)
json_trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(["attention", "token_specs", "size", "name"])),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)


def assert_is_report(report: object) -> None:
    assert isinstance(report, ScenarioReport)
    assert report.ok or report.problems
    for problem in report.problems:
        assert str(problem)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(tree=json_trees, fmt=st.sampled_from(["json", "yaml"]))
@pytest.mark.slow
def test_random_documents_never_raise(tree: Any, fmt: str):
    if fmt == "json":
        text = json.dumps(tree)  # NaN/Infinity included: refused as problems
    else:
        try:
            text = yaml.safe_dump(tree, allow_unicode=True)
        except yaml.YAMLError:
            return
    assert_is_report(load_text(text, fmt))


@settings(max_examples=200)
@given(text=st.text(max_size=200), fmt=st.sampled_from(["json", "yaml", None]))
def test_random_text_never_raises(text: str, fmt: str | None):
    data = text.encode("utf-8", errors="surrogatepass")
    assert_is_report(load_scenario_bytes(data, fmt=fmt))  # type: ignore[arg-type]


yaml_fragments = st.lists(
    st.sampled_from(
        [
            "attention:",
            "token_specs:",
            "attention_patterns:",
            "run:",
            "\n",
            "  ",
            "- ",
            ": ",
            "{",
            "}",
            "[",
            "]",
            ", ",
            "&a ",
            "*a",
            "!!int ",
            "!!binary ",
            "!!python/name:os.system",
            "<<: ",
            "? ",
            "---\n",
            "...\n",
            "'",
            '"',
            "#",
            "null",
            "yes",
            "1e3",
            "2024-13-45",
            "hidden_dim: 8",
            "num_heads: 2",
            "{a: 8}",
            "|",
            ">",
            "%YAML 1.1\n",
            "\t",
            "\\",
            "\x07",
            "~",
            ".nan",
            "-.inf",
            "0x1F",
            "0o17",
            "1_000",
        ]
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(parts=yaml_fragments)
def test_random_yaml_text_never_raises(parts: list[str]):
    assert_is_report(load_text("".join(parts), "yaml"))


@settings(max_examples=150)
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["json", "yaml", None]))
def test_random_bytes_never_raise(data: bytes, fmt: str | None):
    assert_is_report(load_scenario_bytes(data, fmt=fmt))  # type: ignore[arg-type]


VALID_BASE = {
    "attention": {"kind": "mixed", "hidden_dim": 16, "num_heads": 2, "dropout": 0.1},
    "token_specs": [{"surface_anchors": None}, {"name": "surface_queries", "size": 8}],
    "attention_patterns": [
        {"query_tokens": ["surface_anchors", "surface_queries"], "key_value_tokens": ["surface_anchors"]}
    ],
    "run": {"seed": 1, "kv_cache_sizes": {"surface_anchors": 4}, "padding": {}},
}
wrong_values = st.one_of(
    json_trees,
    st.sampled_from([None, [], {}, "", -1, 0, 2.5, 10**30, "abc", True, ["x"], {"a": 1, "b": 2}, [{"a": None}]]),
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += paths_of(child, (*prefix, index))
    return paths


def mutate(document: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "replace" else document
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    if action == "drop":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = value
    elif isinstance(parent, dict):
        parent[f"{path[-1]}_"] = value  # a typo'd sibling key
    return document


@settings(max_examples=200)
@given(data=st.data(), fmt=st.sampled_from(["json", "yaml"]))
@pytest.mark.slow
def test_mutated_valid_scenarios_never_raise(data: st.DataObject, fmt: str):
    document = json.loads(json.dumps(VALID_BASE))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = paths_of(document)
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["drop", "replace", "add"]))
        document = mutate(document, path, action, copy.deepcopy(data.draw(wrong_values)))
    text = json.dumps(document) if fmt == "json" else yaml.safe_dump(document, allow_unicode=True)
    assert_is_report(load_text(text, fmt))


def test_unmutated_base_is_valid():
    assert load_text(json.dumps(VALID_BASE), "json").ok


safe_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
any_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6).filter(lambda s: s.strip())
group_names = st.one_of(safe_names, st.sampled_from(TRICKY_NAMES), any_names)


@st.composite
def valid_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(group_names, min_size=1, max_size=6, unique=True))
    cached_flags = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    if all(cached_flags):
        cached_flags[draw(st.integers(0, len(names) - 1))] = False
    has_cache = any(cached_flags)
    cached = [name for name, flag in zip(names, cached_flags, strict=True) if flag]
    sizes = {
        name: None if flag else draw(st.integers(min_value=1, max_value=5000))
        for name, flag in zip(names, cached_flags, strict=True)
    }
    order = draw(st.permutations(names))
    cuts = sorted(draw(st.sets(st.integers(1, len(order) - 1), max_size=3))) if len(order) > 1 else []
    chunks = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    patterns = []
    for chunk in chunks:
        reads_inputs = not has_cache or all(sizes[name] is None for name in chunk)
        pool = names if reads_inputs else cached
        kv = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        patterns.append({"query_tokens": chunk, "key_value_tokens": kv})
    heads = draw(st.integers(1, 4))
    attention = {
        "kind": "mixed",
        "hidden_dim": heads * 2 * draw(st.integers(3, 6)),  # head_dim even and >= 6, as RoPE on 3-D positions needs
        "num_heads": heads,
        "use_rope": draw(st.booleans()),
        "qk_norm": draw(st.booleans()),
        "dropout": draw(st.floats(min_value=0.0, max_value=1.0)),
        "bias": draw(st.booleans()),
        "init_weights": draw(st.sampled_from(sorted(SUPPORTED_INIT_MODES))),
    }
    if draw(st.booleans()):
        attention["note"] = draw(st.one_of(st.text(max_size=10), st.integers(), st.lists(st.booleans(), max_size=3)))
    run: dict[str, Any] = {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "batch_size": draw(st.integers(1, 64)),
        "device": draw(st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "mps"])),
        "dtype": draw(st.sampled_from(["float32", "float64", "bfloat16", "float16"])),
        "inputs": draw(st.sampled_from(["random", "point_cloud"])),
        "weights": draw(st.sampled_from(["init", "spatial"])),
    }
    if has_cache:
        run["kv_cache_sizes"] = {name: draw(st.integers(1, 4096)) for name in cached if draw(st.booleans())}
    else:
        run["padding"] = {name: draw(st.integers(0, sizes[name] - 1)) for name in names if draw(st.booleans())}
    shorthand = draw(st.booleans())
    token_specs = [{name: sizes[name]} if shorthand else {"name": name, "size": sizes[name]} for name in names]
    return {"attention": attention, "token_specs": token_specs, "attention_patterns": patterns, "run": run}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(document=valid_scenarios(), fmt=st.sampled_from(["json", "yaml"]))
@pytest.mark.slow
def test_valid_scenarios_round_trip_byte_identically(document: dict[str, Any], fmt: str):
    text = json.dumps(document) if fmt == "json" else yaml.safe_dump(document, allow_unicode=True)
    report = load_text(text, fmt)
    assert report.ok, text_of(report)
    assert report.scenario is not None
    SCHEMA_VALIDATOR.validate(document)  # the schema accepts whatever the validator accepts
    assert_round_trips(report.scenario)
    assert_upstream_payload_builds(report.scenario)
    compile(dump_python(report.scenario), "<export>", "exec")
    assert math.isclose(
        json.loads(dump_json(report.scenario))["attention"]["dropout"], document["attention"]["dropout"]
    )


def test_committed_corpus_holds_no_large_files():
    assert all(os.path.getsize(path) < 64 * 1024 for path in (CORPUS / "bad").iterdir())
    assert all(os.path.getsize(path) < 64 * 1024 for path in (CORPUS / "good").iterdir())


@pytest.fixture
def pure_python_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse YAML without libyaml, as on installations whose PyYAML lacks it."""
    monkeypatch.setattr(scenario_yaml, "_Loader", scenario_yaml._PythonLoader)


YAML_FILES = [path for path in BAD_FILES + GOOD_FILES if path.suffix in (".yaml", ".yml")]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: path.name)
def test_pure_python_yaml_parser_gives_the_same_verdicts(path: Path, monkeypatch: pytest.MonkeyPatch):
    with_libyaml = load_scenario_file(path)
    monkeypatch.setattr(scenario_yaml, "_Loader", scenario_yaml._PythonLoader)
    pure = load_scenario_file(path)
    assert pure.ok == with_libyaml.ok
    if "not valid YAML" not in text_of(pure):  # the two parsers word syntax errors differently
        assert text_of(pure) == text_of(with_libyaml)


@pytest.mark.usefixtures("pure_python_yaml")
@pytest.mark.slow
def test_pure_python_yaml_parser_refuses_bombs_and_depth_with_bounded_work(work: ParseWork):
    bomb = billion_laughs(30, 10)
    refused_within(lambda: load_scenario_bytes(bomb, fmt="yaml"), work, peak_limit=50 * 2**20)
    assert_no_expansion(work, bomb)
    composed_before = work.nodes_composed
    depth = MAX_SCENARIO_BYTES // 2 - 8
    report = refused_within(
        lambda: load_scenario_bytes(("[" * depth + "]" * depth).encode(), fmt="yaml"), work, peak_limit=50 * 2**20
    )
    assert "nested more than" in text_of(report)
    assert work.nodes_composed - composed_before <= MAX_DOCUMENT_DEPTH + 1 and work.values_constructed == 0


@pytest.mark.usefixtures("pure_python_yaml")
def test_pure_python_yaml_parser_round_trips_tricky_names():
    assert_round_trips(tricky_scenario())


def test_yaml_boolean_words_are_flagged_where_they_would_pass_silently():
    text = (
        "attention: {hidden_dim: 8, num_heads: yes, use_rope: true}\n"
        "token_specs: [{a: on}]\n"
        "attention_patterns: [{query_tokens: [a], key_value_tokens: [a]}]\n"
    )
    report = load_text(text, "yaml")
    assert not report.ok  # the scenario refuses booleans where numbers go ...
    assert {p.where for p in report.problems if p.severity == "error"} == {"attention.num_heads", "token_specs[0].size"}
    # ... and the loader says where in the file they came from.
    warnings = [problem for problem in report.problems if problem.severity == "warning"]
    assert [problem.where for problem in warnings] == ["line 1, column 39", "line 2, column 19"]
    assert "'yes' is read as the boolean true" in warnings[0].message
    assert "silently take it as 1" in warnings[1].hint
