"""PerceiverAttention beyond the upstream fixtures (KV cache, projections, devices), and the explorer's perceiver
kind: validation, forward, exact weights, KV-cache check and export round trip."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from noether.core.schemas.modules.layers import RopeFrequencyConfig
from noether.explorer import editing as ed
from noether.explorer.io import dump_python, upstream_payload
from noether.explorer.problems import ExplorerError
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import scenario_to_dict, validate_scenario
from noether.modeling.functional.rope import rope
from noether.modeling.modules.attention import PerceiverAttention, PerceiverAttentionConfig
from noether.modeling.modules.layers import RopeFrequency


def _freqs(batch: int, tokens: int, head_dim: int, seed: int) -> torch.Tensor:
    coords = torch.rand(batch, tokens, 3, generator=torch.Generator().manual_seed(seed)) * 50
    return RopeFrequency(RopeFrequencyConfig(hidden_dim=head_dim, input_dim=3, implementation="complex"))(coords)


def _dense_reference(module: PerceiverAttention, q: torch.Tensor, kv: torch.Tensor, **freqs: Any) -> torch.Tensor:
    """Attention written out with an explicit softmax, from the module's own linear layers."""
    heads, head_dim = module.num_heads, module.head_dim
    queries = module.q(q).unflatten(-1, (heads, head_dim)).transpose(1, 2)
    keys = module.k(kv).unflatten(-1, (heads, head_dim)).transpose(1, 2)
    values = module.v(kv).unflatten(-1, (heads, head_dim)).transpose(1, 2)
    if module.use_rope:
        queries, keys = rope(queries, freqs=freqs["q_freqs"]), rope(keys, freqs=freqs["k_freqs"])
    weights = torch.softmax(queries @ keys.transpose(-1, -2) / head_dim**0.5, dim=-1)
    return module.proj((weights @ values).transpose(1, 2).flatten(2))


@pytest.mark.parametrize("use_rope", [False, True])
def test_perceiver_equals_explicit_softmax_attention(device: torch.device, use_rope: bool) -> None:
    torch.manual_seed(0)
    module = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=32, num_heads=4, use_rope=use_rope, kv_dim=24))
    module = module.to(device).eval()
    q, kv = torch.randn(2, 11, 32, device=device), torch.randn(2, 7, 24, device=device)
    freqs = {}
    if use_rope:
        freqs = {"q_freqs": _freqs(2, 11, 8, 1).to(device), "k_freqs": _freqs(2, 7, 8, 2).to(device)}
    with torch.no_grad():
        out, cache = module(q, kv, **freqs)
        expected = _dense_reference(module, q, kv, **freqs)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert cache is not None and set(cache) == {"k", "v"}
    assert cache["k"].shape == (2, 4, 7, 8)


@given(
    n_queries=st.integers(1, 9),
    n_kv=st.integers(1, 9),
    heads=st.sampled_from([1, 2, 4]),
    use_rope=st.booleans(),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_cached_pass_equals_projecting_again(n_queries: int, n_kv: int, heads: int, use_rope: bool, seed: int) -> None:
    torch.manual_seed(seed)
    module = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=24, num_heads=heads, use_rope=use_rope)).eval()
    head_dim = 24 // heads
    rope_ok = use_rope and head_dim % 2 == 0 and head_dim >= 6
    if use_rope and not rope_ok:
        return  # RoPE over 3-D coordinates needs an even head_dim of at least 6
    q, kv, later = torch.randn(1, n_queries, 24), torch.randn(1, n_kv, 24), torch.randn(1, 3, 24)
    kw = {"q_freqs": _freqs(1, n_queries, head_dim, seed), "k_freqs": _freqs(1, n_kv, head_dim, seed + 1)}
    later_freqs = _freqs(1, 3, head_dim, seed + 2) if rope_ok else None
    with torch.no_grad():
        _, cache = module(q, kv, **(kw if rope_ok else {}))
        cached, none = module(later, None, q_freqs=later_freqs, kv_cache=cache)
        direct, _ = module(later, kv, q_freqs=later_freqs, k_freqs=kw["k_freqs"] if rope_ok else None)
    assert none is None
    torch.testing.assert_close(cached, direct, atol=1e-6, rtol=0)


def test_projection_methods_match_the_forward_pass() -> None:
    torch.manual_seed(3)
    module = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=32, num_heads=2, use_rope=True)).eval()
    q, kv = torch.randn(1, 5, 32), torch.randn(1, 6, 32)
    q_freqs, k_freqs = _freqs(1, 5, 16, 0), _freqs(1, 6, 16, 1)
    with torch.no_grad():
        _, cache = module(q, kv, q_freqs=q_freqs, k_freqs=k_freqs)
        keys, values = module.project_keys_values(kv, k_freqs)
        # Chunked query projection (what the explorer does) equals projecting all at once.
        parts = [module.project_queries(q[:, i : i + 2], q_freqs[:, i : i + 2]) for i in range(0, 5, 2)]
    assert cache is not None
    assert torch.equal(keys, cache["k"]) and torch.equal(values, cache["v"])
    torch.testing.assert_close(torch.cat(parts, dim=2), module.project_queries(q, q_freqs))


def test_qk_norm_adds_norms_and_changes_the_output() -> None:
    torch.manual_seed(0)
    plain = PerceiverAttention(PerceiverAttentionConfig(hidden_dim=16, num_heads=2, init_weights="torch"))
    torch.manual_seed(0)
    normed = PerceiverAttention(
        PerceiverAttentionConfig(hidden_dim=16, num_heads=2, init_weights="torch", qk_norm=True)
    )
    assert {"q_norm.weight", "k_norm.weight"} <= set(normed.state_dict())
    q, kv = torch.randn(1, 4, 16) * 3, torch.randn(1, 5, 16) * 3
    with torch.no_grad():
        assert not torch.allclose(plain(q, kv)[0], normed(q, kv)[0])


# ----------------------------------------------------------------------------------------------------------------------
# The explorer's perceiver kind
# ----------------------------------------------------------------------------------------------------------------------


def perceiver_doc(kv_size: int | None = 30, use_rope: bool = True, **run: Any) -> dict[str, Any]:
    return {
        "attention": {"kind": "perceiver", "hidden_dim": 24, "num_heads": 2, "use_rope": use_rope},
        "token_specs": [{"surface_queries": 40}, {"geometry": kv_size}],
        "run": {"inputs": "point_cloud", **run},
    }


@pytest.mark.parametrize(
    ("change", "location", "words"),
    [
        (lambda d: d["token_specs"].append({"volume_queries": 3}), "token_specs", "exactly two groups"),
        (lambda d: d["token_specs"].__setitem__(0, {"surface_queries": None}), "token_specs[0]", "Give it a size"),
        (lambda d: d["token_specs"].__setitem__(1, {"geometry": 0}), "token_specs[1]", "0 tokens"),
        (lambda d: d["run"].update(padding={"surface_queries": 2}), "run.padding", "key_padding_mask"),
        (lambda d: d["attention"].update(kv_dim="wide"), "attention.kv_dim", "positive whole number"),
        (lambda d: d["attention"].update(kv_dim=0), "attention.kv_dim", "null for hidden_dim (24)"),
        (lambda d: d["attention"].update(kv_dim=4), "attention.kv_dim", "need kv_dim >= 6"),
        (lambda d: (d["attention"].update(kv_dim=16), d["run"].update(weights="spatial")), "run.weights", "kv_dim"),
        (
            lambda d: d.update(attention_patterns=[{"query_tokens": ["geometry"], "key_value_tokens": ["geometry"]}]),
            "attention_patterns",
            "one pattern",
        ),
    ],
)
def test_perceiver_scenario_problems_name_the_field(change: Any, location: str, words: str) -> None:
    doc = perceiver_doc()
    change(doc)
    report = validate_scenario(doc)
    assert not report.ok
    assert any(p.where == location and words in str(p) for p in report.problems), report.problems


def test_perceiver_scenario_round_trips_and_keeps_kv_dim() -> None:
    doc = perceiver_doc()
    doc["attention"]["kv_dim"] = 24
    report = validate_scenario(doc)
    assert report.ok and report.scenario is not None, report.problems
    exported = scenario_to_dict(report.scenario)
    assert exported["attention_patterns"] == [{"query_tokens": ["surface_queries"], "key_value_tokens": ["geometry"]}]
    again = validate_scenario(exported)
    assert again.scenario is not None and scenario_to_dict(again.scenario) == exported


def test_perceiver_run_layout_forward_and_exact_weights(device: torch.device) -> None:
    run = ExplorerRun(perceiver_doc(device=device.type))
    layout = run.layout
    assert [g.name for g in layout.query_groups] == ["surface_queries"]
    # The key axis holds only what the queries attend to: the 30 key/value tokens, not the query group.
    assert (layout.n_queries, layout.n_keys, layout.n_inputs) == (40, 30, 70)
    assert [g.name for g in layout.key_groups] == ["geometry"]
    module = run.module
    assert isinstance(module, PerceiverAttention)
    x, freqs = run.inputs.x, run.inputs.freqs
    assert freqs is not None
    with torch.no_grad():
        expected, _ = module(x[:, :40], x[:, 40:], q_freqs=freqs[:, :40], k_freqs=freqs[:, 40:])
    torch.testing.assert_close(run.forward().output, expected.float().cpu(), atol=1e-5, rtol=0)

    # Unpooled map (budget above the token counts) = the softmax the module applies, with zeros outside the pattern.
    result = run.weights(pixels=128)
    assert result.rows.exact and result.cols.exact
    assert result.mean.shape[-2:] == (40, 30) and result.received.shape[-1] == 30
    with torch.no_grad():
        queries = module.project_queries(x[:, :40], freqs[:, :40])
        keys, _ = module.project_keys_values(x[:, 40:], freqs[:, 40:])
        probs = torch.softmax(queries @ keys.transpose(-1, -2) / module.head_dim**0.5, dim=-1).cpu()
    torch.testing.assert_close(result.mean, probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(run.exact_row(7), probs[:, :, 7], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.group_mass, torch.ones(1, 2, 1, 1))


@pytest.mark.parametrize("inputs", ["random", "point_cloud"])
@pytest.mark.parametrize("kv_dim", [12, 40])
def test_a_perceiver_with_its_own_kv_dim_reads_that_many_features(inputs: str, kv_dim: int) -> None:
    doc = perceiver_doc(inputs=inputs)
    doc["attention"]["kv_dim"] = kv_dim
    run = ExplorerRun(doc)
    module = run.module
    assert isinstance(module, PerceiverAttention) and module.k.in_features == kv_dim
    x, freqs = run.inputs.x, run.inputs.freqs
    assert freqs is not None
    # One input axis as wide as the wider input; each group's rows are zero beyond its own features.
    assert x.shape[-1] == max(24, kv_dim)
    assert not x[:, :40, 24:].any() and not x[:, 40:, kv_dim:].any() and x[:, 40:, :kv_dim].abs().sum() > 0
    with torch.no_grad():
        expected, _ = module(x[:, :40, :24], x[:, 40:, :kv_dim], q_freqs=freqs[:, :40], k_freqs=freqs[:, 40:])
        queries = module.project_queries(x[:, :40, :24], freqs[:, :40])
        keys, _ = module.project_keys_values(x[:, 40:, :kv_dim], freqs[:, 40:])
    torch.testing.assert_close(run.forward().output, expected.float().cpu(), atol=1e-5, rtol=0)
    probs = torch.softmax(queries @ keys.transpose(-1, -2) / module.head_dim**0.5, dim=-1)
    torch.testing.assert_close(run.weights(pixels=64).mean, probs, atol=1e-5, rtol=0)
    assert all(t.max_abs_diff is not None and t.max_abs_diff <= 1e-5 for t in run.backends(1, ("mixed", "dense")))
    cached_doc = perceiver_doc(kv_size=None, inputs=inputs, kv_cache_sizes={"geometry": 25})
    cached_doc["attention"]["kv_dim"] = kv_dim
    check = ExplorerRun(cached_doc).kv_cache_check()
    assert check is not None and check.equal, check.max_abs_diff


def test_random_inputs_of_a_perceiver_without_its_own_kv_dim_are_unchanged() -> None:
    """The same seed gives the same features as before kv_dim was supported (one Gaussian draw, hidden wide)."""
    run = ExplorerRun(perceiver_doc(inputs="random"))
    expected = torch.randn(1, 70, 24, generator=torch.Generator().manual_seed(run.scenario.run.seed))
    assert torch.equal(run.inputs.x.cpu(), expected)


def test_perceiver_run_with_cached_keys_values_matches_one_pass() -> None:
    run = ExplorerRun(perceiver_doc(kv_size=None, kv_cache_sizes={"geometry": 25}))
    assert run.layout.has_cache and run.layout.n_keys == 25
    check = run.kv_cache_check()
    assert check is not None and check.cached_groups == ["geometry"]
    assert check.equal, check.max_abs_diff
    timings = run.backends(repeats=1, include=("mixed", "dense"))
    assert all(t.max_abs_diff is not None and t.max_abs_diff <= 1e-5 for t in timings if t.available)


def test_perceiver_run_refuses_a_bad_scenario_with_the_problem() -> None:
    doc = perceiver_doc()
    doc["token_specs"].append({"volume_queries": 3})
    with pytest.raises(ExplorerError, match="exactly two groups"):
        ExplorerRun(doc)


@pytest.mark.parametrize("kv_size", [30, None])
@pytest.mark.slow
def test_perceiver_python_export_runs(tmp_path: Path, kv_size: int | None) -> None:
    report = validate_scenario(perceiver_doc(kv_size=kv_size, device="cpu", kv_cache_sizes={"geometry": 9}))
    assert report.scenario is not None, report.problems
    script = tmp_path / "snippet.py"
    script.write_text(dump_python(report.scenario), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "output shape: (1, 40, 24)"
    assert upstream_payload(report.scenario)["module_class"] == "PerceiverAttention"


def test_switching_the_editor_to_perceiver_generates_its_one_rule() -> None:
    draft = ed.empty_draft()
    draft = {
        **draft,
        "attention": {"kind": "self_anchor", "hidden_dim": 24, "num_heads": 2, "branches": ["surface"]},
        "token_specs": [{"name": "surface_queries", "size": 8}, {"name": "geometry", "size": 4}],
    }
    switched = ed.set_kind(draft, "perceiver")
    assert "branches" not in switched["attention"] and "attention_patterns" not in switched
    assert ed.generated_rules(switched) == [(["surface_queries"], ["geometry"])]
    assert validate_scenario(switched).ok
