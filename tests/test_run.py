"""ExplorerRun end to end on small versions of the presets: forward pass, KV-cache check, backends, the resource
guard, devices and dtypes, trained checkpoints, spatial weights and point-cloud inputs."""

import copy
import io
import pathlib
import pickle
import tracemalloc
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import DEVICES
from safetensors.torch import save as save_safetensors

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.explorer.checkpoint import fit_problems, load_state_dict_bytes, select_attention_weights
from noether.explorer.guard import Estimate, check, format_bytes, memory_budget
from noether.explorer.inputs import token_positions
from noether.explorer.pointcloud import load_cloud_bytes, load_sample, morton_order
from noether.explorer.presets import PRESETS, preset_text
from noether.explorer.problems import ExplorerError
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import validate_scenario
from noether.modeling.modules.attention import MixedAttention, MixedAttentionConfig, SelfAnchorAttention
from noether.modeling.modules.attention.anchor_attention import SelfAnchorAttentionConfig

SMALL_SIZES = {"anchors": 6, "queries": 9, "latents": 5, "tokens": 12}
"""Group sizes of the shrunken presets, by the last part of the group name (chunks get 4)."""


def small_preset(key: str, **run: Any) -> dict[str, Any]:
    """A preset with tiny groups (and tiny caches), otherwise unchanged."""
    data = yaml.safe_load(preset_text(key))
    specs = []
    for item in data["token_specs"]:
        ((name, size),) = item.items()
        specs.append({name: None if size is None else SMALL_SIZES.get(name.split("_")[-1], 4)})
    data["token_specs"] = specs
    data.setdefault("run", {})
    if data["run"].get("kv_cache_sizes"):
        data["run"]["kv_cache_sizes"] = {name: 5 for name in data["run"]["kv_cache_sizes"]}
    data["run"].update(run)
    return data


def mixed_doc(sizes: dict[str, int], hidden_dim: int = 8, num_heads: int = 2, **attention: Any) -> dict[str, Any]:
    """Full self-attention over the given groups."""
    names = list(sizes)
    return {
        "attention": {"hidden_dim": hidden_dim, "num_heads": num_heads, **attention},
        "token_specs": [{name: size} for name, size in sizes.items()],
        "attention_patterns": [{"query_tokens": names, "key_value_tokens": names}],
    }


PRESET_KEYS = [p.key for p in PRESETS]
CACHED_PRESETS = {"kv_cache"}


# ----------------------------------------------------------------------------------------------------------------------
# Presets, forward pass, KV cache, backends
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", PRESET_KEYS)
def test_small_preset_forward(key: str) -> None:
    data = small_preset(key, device="cpu")
    run = ExplorerRun(data)
    layout = run.layout
    result = run.forward()
    batch, hidden = run.scenario.run.batch_size, run.scenario.attention.hidden_dim
    assert result.output.shape == (batch, layout.n_queries, hidden)
    assert torch.isfinite(result.output).all()
    assert run.forward() is result
    if run.scenario.run.weights == "spatial":
        assert any("spatial weights" in note for note in run.notes)
    else:
        assert run.notes == []
    if key in CACHED_PRESETS:
        assert result.new_kv_cache_groups == []  # a cached pass returns no new cache
    else:
        assert result.new_kv_cache_groups == sorted(g.name for g in layout.groups if "_anchor" in g.name)


@pytest.mark.parametrize("key", PRESET_KEYS)
def test_small_preset_kv_cache_check(key: str) -> None:
    run = ExplorerRun(small_preset(key, device="cpu"))
    check_result = run.kv_cache_check()
    if key not in CACHED_PRESETS:
        assert check_result is None
        return
    assert check_result is not None
    assert check_result.equal
    assert check_result.max_abs_diff <= 1e-5
    assert check_result.cached_groups == ["surface_anchors", "volume_anchors"]
    assert check_result.query_groups == ["surface_queries", "volume_queries"]
    assert run.kv_cache_check() is check_result


def test_kv_cache_check_detects_a_wrong_cache() -> None:
    """The check compares real numbers: corrupting the cache makes it fail."""
    run = ExplorerRun(small_preset("kv_cache", device="cpu"))
    cache = run.kv_cache()
    assert cache is not None
    cache["surface_anchors"]["v"].add_(1.0)
    check_result = run.kv_cache_check()
    assert check_result is not None
    assert not check_result.equal
    assert check_result.max_abs_diff > 1e-3


def test_cache_of_groups_without_anchor_in_their_name_is_projected_with_a_note() -> None:
    data = {
        "attention": {"hidden_dim": 8, "num_heads": 2},
        "token_specs": [{"memory": None}, {"q": 4}],
        "attention_patterns": [{"query_tokens": ["memory", "q"], "key_value_tokens": ["memory"]}],
        "run": {"kv_cache_sizes": {"memory": 3}},
    }
    run = ExplorerRun(data)
    check_result = run.kv_cache_check()
    assert check_result is not None
    assert check_result.max_abs_diff <= 1e-5
    assert any("'memory'" in note for note in check_result.notes)


@pytest.mark.parametrize("key", PRESET_KEYS)
def test_small_preset_backends_agree(key: str) -> None:
    run = ExplorerRun(small_preset(key, device="cpu"))
    timings = run.backends(repeats=1, include=("mixed", "dense"))
    assert [t.name for t in timings] == ["per-pattern MixedAttention", "dense masked SDPA"]
    assert all(t.available and t.seconds is not None and t.seconds >= 0 for t in timings)
    assert timings[0].max_abs_diff == 0.0
    assert timings[1].max_abs_diff is not None and timings[1].max_abs_diff <= 1e-5


def test_dense_backend_agrees_with_padding() -> None:
    data = mixed_doc({"a": 5, "b": 6})
    data["attention_patterns"] = [
        {"query_tokens": ["a"], "key_value_tokens": ["b"]},
        {"query_tokens": ["b"], "key_value_tokens": ["a", "b"]},
    ]
    data["run"] = {"padding": {"a": 2, "b": 1}, "batch_size": 2}
    timings = ExplorerRun(data).backends(repeats=1, include=("mixed", "dense"))
    assert timings[1].max_abs_diff is not None and timings[1].max_abs_diff <= 1e-5


def test_dense_backend_is_refused_by_the_guard_with_a_reason() -> None:
    # 2000 x 2000 masks need ~20 MB (bool + float); the forward pass needs well under 5 MB.
    run = ExplorerRun(mixed_doc({"a": 2000}), memory_budget_mb=5)
    timings = run.backends(repeats=1, include=("mixed", "dense"))
    assert timings[0].available
    assert not timings[1].available
    assert "resource guard" in timings[1].note
    assert "dense masked SDPA" in timings[1].note


def test_backends_with_zero_query_tokens() -> None:
    data = {
        "attention": {"hidden_dim": 8, "num_heads": 2},
        "token_specs": [{"memory": None}, {"q": 0}],
        "attention_patterns": [{"query_tokens": ["memory", "q"], "key_value_tokens": ["memory"]}],
        "run": {"kv_cache_sizes": {"memory": 3}},
    }
    run = ExplorerRun(data)
    assert run.forward().output.shape == (1, 0, 8)
    timings = run.backends(repeats=1, include=("mixed", "dense"))
    assert all(t.max_abs_diff == 0.0 for t in timings)


@pytest.mark.slow
def test_flex_backend_is_available_and_agrees_or_says_why_not() -> None:
    run = ExplorerRun(small_preset("self_anchor", device="cpu"))
    timings = run.backends(repeats=1, include=("mixed", "dense", "flex"))
    assert [t.name for t in timings] == ["per-pattern MixedAttention", "dense masked SDPA", "FlexAttention"]
    flex = timings[2]
    if flex.available:
        assert flex.max_abs_diff is not None and flex.max_abs_diff <= 1e-4
        assert "compile" in flex.note
    else:
        assert flex.note, "an unavailable backend must say why"


def test_progress_is_reported_in_order() -> None:
    seen: list[tuple[float, str]] = []
    run = ExplorerRun(small_preset("kv_cache", device="cpu"), progress=lambda f, m: seen.append((f, m)))
    run.weights(pixels=16)
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0
    assert any("anchor pass" in m for _, m in seen)
    assert any("attention weights" in m for _, m in seen)
    assert all(0.0 <= f <= 1.0 for f in fractions)


def test_exact_row_outside_the_query_axis_is_refused() -> None:
    run = ExplorerRun(mixed_doc({"a": 3}))
    with pytest.raises(ExplorerError, match=r"outside 0\.\.2"):
        run.exact_row(3)
    with pytest.raises(ExplorerError):
        run.exact_row(-1)


# ----------------------------------------------------------------------------------------------------------------------
# Resource guard
# ----------------------------------------------------------------------------------------------------------------------


def huge_doc() -> dict[str, Any]:
    return mixed_doc({"surface": 6 * 10**8, "volume": 4 * 10**8}, hidden_dim=1024, num_heads=8)


def test_billion_token_scenario_is_valid() -> None:
    report = validate_scenario(huge_doc())
    assert report.ok, [str(p) for p in report.problems]


def test_billion_token_scenario_is_refused_from_the_estimate_without_allocating(tensor_counter: Any) -> None:
    data = huge_doc()
    tracemalloc.start()
    try:
        with tensor_counter, pytest.raises(ExplorerError) as info:
            ExplorerRun(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "resource guard" in message
    assert " TB" in message or " GB" in message
    # Refused before the module or a single input tensor was built.
    assert tensor_counter.tensor_bytes == 0
    assert peak < 20 * 2**20
    # The counter does see what a run that is allowed builds.
    with tensor_counter:
        ExplorerRun(mixed_doc({"a": 6, "b": 6}))
    assert tensor_counter.tensor_bytes > 0


def test_tiny_memory_budget_refuses_weights_with_the_estimate() -> None:
    run = ExplorerRun(mixed_doc({"a": 6, "b": 6}), memory_budget_mb=0.05)
    with pytest.raises(ExplorerError) as info:
        run.weights()
    problem = info.value.problems[0]
    assert problem.where == "resource guard"
    assert "attention-weight maps" in problem.message
    assert "MB" in problem.message and "budget" in problem.message


def test_generous_budget_allows_the_same_weights() -> None:
    run = ExplorerRun(mixed_doc({"a": 6, "b": 6}), memory_budget_mb=64)
    assert run.weights().mean.shape == (1, 2, 12, 12)


def test_time_budget_refuses_with_the_estimate() -> None:
    with pytest.raises(ExplorerError, match=r"resource guard.*would take about"):
        check(Estimate("the forward pass", 10, 3600.0), budget_bytes=100, time_budget_s=60.0)


def test_memory_budget_override_and_format() -> None:
    assert memory_budget(torch.device("cpu"), 1.5) == int(1.5 * 2**20)
    assert memory_budget(torch.device("cpu")) > 0
    assert format_bytes(3 * 2**40) == "3.0 TB"
    assert format_bytes(512) == "512 B"


# ----------------------------------------------------------------------------------------------------------------------
# Devices and dtypes
# ----------------------------------------------------------------------------------------------------------------------


def test_runs_on_each_available_device(device: torch.device) -> None:
    data = small_preset("self_anchor", device=device.type)
    run = ExplorerRun(data)
    assert run.device.type == device.type
    assert next(run.core.parameters()).device.type == device.type
    assert run.inputs.x.device.type == device.type
    output = run.forward().output
    assert output.device.type == "cpu"
    assert torch.isfinite(output).all()
    reference = ExplorerRun(small_preset("self_anchor", device="cpu")).forward().output
    torch.testing.assert_close(output, reference, atol=1e-4, rtol=1e-4)


def test_every_available_device_is_in_the_conftest_list() -> None:
    from noether.explorer.devices import available_devices

    assert {name.split(":")[0] for name in available_devices()} == set(DEVICES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present; the fallback cannot be observed")
def test_absent_cuda_falls_back_to_cpu_with_a_note() -> None:
    run = ExplorerRun(small_preset("full_self_attention", device="cuda"))
    assert run.device == torch.device("cpu")
    assert any("CUDA" in note and "cpu" in note for note in run.notes)
    assert run.forward().output.shape == (1, 12, 128)


def test_explicit_cpu_has_no_device_note() -> None:
    assert ExplorerRun(small_preset("full_self_attention", device="cpu")).notes == []


def test_bfloat16_runs_close_to_float32() -> None:
    run = ExplorerRun(small_preset("perceiver", device="cpu", dtype="bfloat16"))
    assert run.dtype == torch.bfloat16
    assert next(run.core.parameters()).dtype == torch.bfloat16
    output = run.forward().output
    assert output.dtype == torch.float32  # results come back as float32 on cpu
    reference = ExplorerRun(small_preset("perceiver", device="cpu")).forward().output
    assert torch.isfinite(output).all()
    assert (output - reference).abs().max() < 0.05
    assert run.weights(pixels=8).mean.isfinite().all()


def test_float16_on_cpu_runs_as_float32_with_a_note() -> None:
    run = ExplorerRun(small_preset("perceiver", device="cpu", dtype="float16"))
    assert run.device.type == "cpu"
    assert run.dtype == torch.float32
    assert any("float16" in note and "float32" in note for note in run.notes)


def test_float64_runs() -> None:
    run = ExplorerRun(small_preset("block_causal", device="cpu", dtype="float64"))
    assert next(run.core.parameters()).dtype == torch.float64
    assert torch.isfinite(run.forward().output).all()


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------

CKPT_DOC = {
    "attention": {"hidden_dim": 8, "num_heads": 2, "use_rope": True, "qk_norm": False},
    "token_specs": [{"lat": 4}, {"q": 5}],
    "attention_patterns": [
        {"query_tokens": ["lat"], "key_value_tokens": ["lat"]},
        {"query_tokens": ["q"], "key_value_tokens": ["lat", "q"]},
    ],
    "run": {"device": "cpu"},
}


def ckpt_doc(**attention: Any) -> dict[str, Any]:
    data = copy.deepcopy(CKPT_DOC)
    data["attention"].update(attention)
    if data["attention"]["use_rope"] and data["attention"]["hidden_dim"] // data["attention"]["num_heads"] < 6:
        data["attention"]["hidden_dim"] = 12
    return data


def trained_module(seed: int = 7, **attention: Any) -> MixedAttention:
    config = {**ckpt_doc(**attention)["attention"]}
    torch.manual_seed(seed)
    module = MixedAttention(MixedAttentionConfig(**config)).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)  # far from any fresh initialisation
    return module


def torch_bytes(obj: object, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def direct_forward(module: MixedAttention, run: ExplorerRun) -> torch.Tensor:
    specs = [TokenSpec(name=s.name, size=s.size) for s in run.scenario.token_specs]
    patterns = [AttentionPattern(**p.model_dump()) for p in run.scenario.patterns()]
    with torch.no_grad():
        out, _ = module(run.inputs.x, specs, patterns, freqs=run.inputs.freqs)
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "torch_legacy", "wrapped"])
def test_checkpoint_round_trip_gives_the_modules_output(fmt: str) -> None:
    module = trained_module()
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if fmt == "safetensors":
        data = save_safetensors(state)
    elif fmt == "torch":
        data = torch_bytes(state)
    elif fmt == "torch_legacy":
        data = torch_bytes(state, _use_new_zipfile_serialization=False)
    else:
        data = torch_bytes({"state_dict": state, "epoch": 3})
    weights = load_state_dict_bytes(data)
    assert sorted(weights) == sorted(state)
    run = ExplorerRun(ckpt_doc(), weights=weights)
    assert any("trained weights loaded" in note for note in run.notes)
    torch.testing.assert_close(run.forward().output, direct_forward(module, run), atol=1e-5, rtol=0)
    fresh = ExplorerRun(ckpt_doc()).forward().output
    assert not torch.allclose(fresh, run.forward().output, atol=1e-3)


def test_anchor_module_state_dict_loads_through_its_prefix() -> None:
    data = small_preset("self_anchor", device="cpu", inputs="random", weights="init")
    data["attention"].update(hidden_dim=12, num_heads=2)
    config = {k: v for k, v in data["attention"].items() if k != "kind"}
    torch.manual_seed(1)
    module = SelfAnchorAttention(SelfAnchorAttentionConfig(**config)).eval()
    run = ExplorerRun(data, weights=load_state_dict_bytes(save_safetensors(module.state_dict())))
    assert any("'mixed_attention.'" in note for note in run.notes)
    specs = list(run.scenario.token_specs)
    with torch.no_grad():
        expected, _ = module(run.inputs.x, specs, freqs=run.inputs.freqs)
    torch.testing.assert_close(run.forward().output, expected, atol=1e-5, rtol=0)


def full_model_state() -> tuple[dict[str, torch.Tensor], MixedAttention]:
    layers = [trained_module(seed) for seed in (1, 2)]
    state = {"embed.weight": torch.zeros(3, 8), "head.bias": torch.zeros(2)}
    for index, layer in enumerate(layers):
        state.update({f"blocks.{index}.attn.{k}": v for k, v in layer.state_dict().items()})
    return state, layers[1]


def test_full_model_needs_a_prefix_and_lists_them() -> None:
    state, _ = full_model_state()
    with pytest.raises(ExplorerError) as info:
        ExplorerRun(ckpt_doc(), weights=state)
    message = str(info.value)
    assert "'blocks.0.attn.'" in message and "'blocks.1.attn.'" in message
    assert "prefix" in message


def test_full_model_with_prefix_uses_that_layer() -> None:
    state, layer = full_model_state()
    run = ExplorerRun(ckpt_doc(), weights=state, weights_prefix="blocks.1.attn.")
    torch.testing.assert_close(run.forward().output, direct_forward(layer, run), atol=1e-5, rtol=0)


def test_unknown_prefix_lists_the_available_ones() -> None:
    state, _ = full_model_state()
    with pytest.raises(ExplorerError) as info:
        select_attention_weights(state, "blocks.2.attn.")
    assert "blocks.0.attn." in str(info.value) and "blocks.1.attn." in str(info.value)


def test_file_without_attention_layer() -> None:
    with pytest.raises(ExplorerError, match="no attention layer"):
        select_attention_weights({"embed.weight": torch.zeros(2)})


def test_wrong_hidden_dim_explains_the_setting() -> None:
    module = trained_module(hidden_dim=16, num_heads=2, use_rope=False)
    with pytest.raises(ExplorerError) as info:
        ExplorerRun(ckpt_doc(use_rope=False), weights=module.state_dict())
    problems = info.value.problems
    # One problem for the width all projections agree on, not one per tensor.
    assert [p.where for p in problems] == ["weights"]
    assert "set attention.hidden_dim: 16" in problems[0].hint and "16 x 16" in problems[0].message


def test_unexpected_q_norm_explains_qk_norm() -> None:
    module = trained_module(qk_norm=True)
    with pytest.raises(ExplorerError) as info:
        ExplorerRun(ckpt_doc(qk_norm=False), weights=module.state_dict())
    by_where = {p.where: p for p in info.value.problems}
    assert {"weights.q_norm.weight", "weights.k_norm.weight"} <= set(by_where)
    assert "set attention.qk_norm: true" in by_where["weights.q_norm.weight"].hint


def test_missing_q_norm_explains_qk_norm() -> None:
    module = trained_module(qk_norm=False)
    with pytest.raises(ExplorerError) as info:
        ExplorerRun(ckpt_doc(qk_norm=True), weights=module.state_dict())
    by_where = {p.where: p for p in info.value.problems}
    assert "weights.q_norm.weight" in by_where
    assert "missing" in by_where["weights.q_norm.weight"].message
    assert "set attention.qk_norm: false" in by_where["weights.q_norm.weight"].hint


def test_bias_mismatch_explains_bias() -> None:
    module = trained_module(bias=False)
    problems = fit_problems(MixedAttention(MixedAttentionConfig(**ckpt_doc()["attention"])), module.state_dict())
    assert {p.where for p in problems} == {f"weights.{n}.bias" for n in ("q", "k", "v", "proj")}
    assert all("attention.bias: false" in p.hint for p in problems)


class Exploit:
    """Unpickling this calls ``Path.touch(path)``: a harmless stand-in for arbitrary code execution."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[pathlib.Path]]:
        return (pathlib.Path.touch, (self.path,))


def test_pickle_payload_is_real(tmp_path: pathlib.Path) -> None:
    """Control for the test below: plain unpickling of the payload does run code."""
    target = tmp_path / "control"
    pickle.loads(pickle.dumps({"q.weight": torch.zeros(1), "x": Exploit(target)}))
    assert target.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_with_a_custom_class_is_refused_without_running_it(tmp_path: pathlib.Path, legacy: bool) -> None:
    target = tmp_path / "pwned"
    data = torch_bytes({"q.weight": torch.zeros(1), "x": Exploit(target)}, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ExplorerError) as info:
        load_state_dict_bytes(data, name="evil.pt")
    assert not target.exists()
    problem = info.value.problems[0]
    assert problem.where == "evil.pt"
    assert "refused" in problem.message and "run code" in problem.message
    assert "weights_only" not in str(problem)  # PyTorch's advice to load it unsafely is never repeated


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_and_garbage_are_refused(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "pwned"
    for data in (pickle.dumps({"q.weight": Exploit(target)}), b"not a checkpoint", b""):
        with pytest.raises(ExplorerError):
            load_state_dict_bytes(data)
    assert not target.exists()


def test_checkpoint_without_tensors_is_refused() -> None:
    with pytest.raises(ExplorerError, match="no state_dict"):
        load_state_dict_bytes(torch_bytes({"epoch": 3, "lr": 0.1}))


# ----------------------------------------------------------------------------------------------------------------------
# Spatial weights and point-cloud inputs
# ----------------------------------------------------------------------------------------------------------------------


def near_mass(weights_mode: str) -> float:
    """Mean attention mass of a query on its 5% nearest keys (by position)."""
    data = mixed_doc({"surface_pts": 200}, hidden_dim=24, use_rope=True)
    data["run"] = {"inputs": "point_cloud", "weights": weights_mode, "device": "cpu"}
    run = ExplorerRun(data)
    weights = run.weights(pixels=200).mean[0].mean(0)
    positions = run.inputs.positions[0]
    nearest = torch.cdist(positions, positions).topk(10, largest=False).indices
    return float(weights.gather(1, nearest).sum(1).mean())


def test_spatial_weights_are_more_local_than_init() -> None:
    init, spatial = near_mass("init"), near_mass("spatial")
    assert init < 0.08  # close to uniform: 10 of 200 keys
    assert spatial > 2 * init


def point_cloud_doc(**sizes: int) -> dict[str, Any]:
    data = mixed_doc(sizes)
    data["run"] = {"inputs": "point_cloud", "batch_size": 2, "seed": 5}
    return data


def rows_in(points: np.ndarray, pool: np.ndarray) -> bool:
    members = {tuple(row) for row in pool.tolist()}
    return all(tuple(row) in members for row in points.tolist())


def test_point_cloud_inputs_are_deterministic() -> None:
    data = point_cloud_doc(surface_anchors=20, volume_queries=30)
    first, second = ExplorerRun(data), ExplorerRun(data)
    assert torch.equal(first.inputs.x, second.inputs.x)
    assert torch.equal(first.inputs.positions, second.inputs.positions)
    other = ExplorerRun({**data, "run": {**data["run"], "seed": 6}})
    assert not torch.equal(first.inputs.positions, other.inputs.positions)
    assert not torch.equal(first.inputs.positions[0], first.inputs.positions[1])  # batch elements differ


@pytest.mark.slow
def test_point_cloud_positions_come_from_the_right_domain() -> None:
    data = point_cloud_doc(surface_anchors=20, volume_queries=30, wake=10)
    run = ExplorerRun(data)
    sample = load_sample()
    positions = run.inputs.positions.numpy()
    for b in range(2):
        surface, volume, wake = positions[b, :20], positions[b, 20:50], positions[b, 50:]
        assert rows_in(surface, sample["surface"])
        assert rows_in(volume, sample["volume"])
        assert not rows_in(volume, sample["surface"])
        assert rows_in(wake, np.concatenate([sample["surface"], sample["volume"]]))
        low, high = sample["surface"].min(0), sample["surface"].max(0)
        assert ((surface >= low) & (surface <= high)).all()
        for group in (surface, volume):
            assert (morton_order(group) == np.arange(len(group))).all()  # Z-ordered


def test_point_cloud_features_are_sincos_of_positions() -> None:
    run = ExplorerRun(point_cloud_doc(surface=8))
    assert run.inputs.x.abs().max() <= 1.0 + 1e-6
    assert run.inputs.x.std() > 0.1


def test_random_inputs_are_in_the_box() -> None:
    data = mixed_doc({"a": 50})
    run = ExplorerRun(data)
    positions = run.inputs.positions[0]
    assert (positions >= 0).all() and (positions <= torch.tensor([4.5, 1.8, 1.4])).all()
    scenario = validate_scenario(data).scenario
    assert scenario is not None
    assert torch.equal(token_positions(scenario, run.layout), run.inputs.positions)


def test_uploaded_cloud_replaces_the_sample() -> None:
    rng = np.random.default_rng(0)
    cloud = {"surface": rng.normal(size=(40, 3)).astype(np.float32), "volume": rng.normal(size=(50, 3)) + 100}
    cloud = load_cloud_bytes(npz_bytes(**cloud))
    run = ExplorerRun(point_cloud_doc(surface_anchors=10, volume_queries=12), point_cloud=cloud)
    positions = run.inputs.positions[0].numpy()
    assert rows_in(positions[:10], cloud["surface"])
    assert rows_in(positions[10:], cloud["volume"])


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


POINTS = np.arange(12, dtype=np.float64).reshape(4, 3)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("npz", npz_bytes(surface=POINTS, volume=POINTS + 1)),
        ("npz_one_array", npz_bytes(points=POINTS)),
        ("npy", npy_bytes(POINTS)),
        ("csv", b"0,1,2\n3,4,5\n6,7,8\n9,10,11\n"),
        ("text", b"0 1 2\n3 4 5\n6 7 8\n9 10 11\n"),
    ],
)
def test_load_cloud_bytes_accepts(name: str, data: bytes) -> None:
    cloud = load_cloud_bytes(data)
    assert set(cloud) == {"surface", "volume"}
    assert all(points.dtype == np.float32 and points.shape == (4, 3) for points in cloud.values())
    np.testing.assert_array_equal(cloud["surface"], POINTS)
    np.testing.assert_array_equal(cloud["volume"], POINTS + 1 if name == "npz" else POINTS)


def test_load_cloud_bytes_one_domain_serves_both() -> None:
    cloud = load_cloud_bytes(npz_bytes(volume=POINTS))
    np.testing.assert_array_equal(cloud["surface"], cloud["volume"])


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("two_columns", npy_bytes(np.zeros((5, 2)))),
        ("one_dim", npy_bytes(np.zeros(6))),
        ("empty", npy_bytes(np.zeros((0, 3)))),
        ("nan", npy_bytes(np.array([[0.0, 1.0, np.nan]]))),
        ("inf_csv", b"0,1,inf\n"),
        ("bad_volume", npz_bytes(surface=POINTS, volume=np.zeros((3, 4)))),
        ("pickled_npy", npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)),
        ("pickled_npz", npz_bytes(surface=np.array([{"a": 1}], dtype=object))),
        ("ragged_csv", b"0,1,2\n3,4\n"),
        ("binary", b"\xff\xfe\x00garbage"),
    ],
)
def test_load_cloud_bytes_rejects(name: str, data: bytes) -> None:
    with pytest.raises(ExplorerError) as info:
        load_cloud_bytes(data, name="cloud.bin")
    assert info.value.problems[0].where.startswith("cloud.bin")


def test_progress_can_be_given_per_call_without_touching_the_run() -> None:
    run = ExplorerRun(small_preset("kv_cache"))
    seen: list[str] = []
    run.kv_cache_check(progress=lambda fraction, message: seen.append(message))
    run.weights(pixels=64, progress=lambda fraction, message: seen.append(message))
    assert run.progress is None
    assert any("anchor pass" in m for m in seen) and any("attention weights" in m for m in seen)


def test_a_small_uploaded_cloud_is_reused_not_replaced_by_the_sample_car() -> None:
    rng = np.random.default_rng(0)
    cloud = {
        "surface": rng.uniform(50, 51, (4, 3)).astype(np.float32),
        "volume": rng.uniform(70, 71, (500, 3)).astype(np.float32),
    }
    run = ExplorerRun(small_preset("self_anchor"), point_cloud=cloud)
    positions = run.inputs.positions[0].numpy()
    surface = run.layout.by_name["surface_queries"]
    drawn = positions[surface.input_span]
    assert surface.size > 4 and drawn.min() >= 50 and drawn.max() <= 51  # only the uploaded points, reused
    assert any("surface_queries" in note and "reused" in note for note in run.notes)
