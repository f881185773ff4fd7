"""Writing a scenario as a runnable Python snippet that builds the layer and runs it once on random input."""

import keyword
from typing import Any

from noether.explorer.io_export import _config_class_name, _config_kwargs, _module_class_name
from noether.explorer.perceiver_snippet import perceiver_snippet
from noether.explorer.scenario import Scenario, scenario_to_dict


def _call_lines(call: str, kwargs: dict[str, Any]) -> list[str]:
    """``call(key=value, ...)`` one argument a line; keys that are not identifiers go through ``**{...}``."""
    plain = {k: v for k, v in kwargs.items() if k.isidentifier() and not keyword.iskeyword(k)}
    other = {k: v for k, v in kwargs.items() if k not in plain}
    lines = [f"{call}(", *(f"    {key}={value!r}," for key, value in plain.items())]
    if other:
        lines.append(f"    **{other!r},")
    return [*lines, ")"]


def _device_expression(device: str) -> str:
    if device == "auto":
        return (
            'torch.device("cuda" if torch.cuda.is_available() '
            'else "mps" if torch.backends.mps.is_available() else "cpu")'
        )
    return f"torch.device({device!r})"


def _spec_lines(specs: list[tuple[str, int | None]], comment_cached: bool) -> list[str]:
    lines = []
    for name, size in specs:
        note = "  # cached: keys/values come from kv_cache" if comment_cached and size is None else ""
        lines.append(f"    TokenSpec(name={name!r}, size={size!r}),{note}")
    return lines


def _rope_position_dim(head_dim: int) -> int:
    # RopeFrequency needs at least two features per coordinate axis: 3-D positions from head_dim 6 on.
    return max(1, min(3, head_dim // 2))


def _rope_lines(head_dim: int) -> list[str]:
    # Complex rotations pair up features, so an odd head_dim takes the per-axis ("real") implementation.
    implementation = "complex" if head_dim % 2 == 0 else "real"
    position_dim = _rope_position_dim(head_dim)
    return [
        f"# RoPE rotates queries and keys by each token's position (random {position_dim}-D positions here).",
        "rope = RopeFrequency(",
        f"    RopeFrequencyConfig(hidden_dim={head_dim}, input_dim={position_dim}, implementation={implementation!r})",
        ").to(device)",
        "",
    ]


def _freqs_argument(head_dim: int | None, tokens: int) -> str:
    """The ``freqs=...`` argument of a forward call when the scenario uses RoPE (head_dim given), else ''."""
    if head_dim is None:
        return ""
    return f", freqs=rope(torch.rand(batch_size, {tokens}, {_rope_position_dim(head_dim)}, device=device))"


def dump_python(scenario: Scenario) -> str:
    """A runnable snippet: builds the specs, patterns, config and module, runs random input, prints the shape."""
    data = scenario_to_dict(scenario)
    attention = data["attention"]
    run = data["run"]
    kind = attention["kind"]
    config_class, module_class = _config_class_name(scenario), _module_class_name(scenario)
    hidden_dim, num_heads = attention["hidden_dim"], attention["num_heads"]
    head_dim = hidden_dim // num_heads
    use_rope = bool(attention["use_rope"])
    rope_dim = head_dim if use_rope else None
    specs = [(item["name"], item["size"]) for item in data["token_specs"]]
    cached = [name for name, size in specs if size is None]
    input_tokens = sum(size for _, size in specs if size is not None)
    patterns_argument = ", attention_patterns" if kind == "mixed" else ""
    schema_imports = "AttentionPattern, TokenSpec" if kind == "mixed" else "TokenSpec"

    header = [
        '"""Attention scenario exported by noether-explorer: runs the layer once on random input, prints the shape.',
        "",
        "Needs PyTorch and the Noether attention API (emmiai-noether, or the explorer's own noether package).",
        '"""',
        "",
        "import torch",
        "",
    ]
    if kind == "perceiver":
        config_lines = _call_lines(f"config = {config_class}", _config_kwargs(scenario))
        return "\n".join(perceiver_snippet(data, config_lines, header, _device_expression(run["device"]))) + "\n"
    lines = [*header, f"from noether.core.schemas.modules.attention import {schema_imports}"]
    if use_rope:
        lines.append("from noether.core.schemas.modules.layers import RopeFrequencyConfig")
    lines.append(f"from noether.modeling.modules.attention import {module_class}, {config_class}")
    if use_rope:
        lines.append("from noether.modeling.modules.layers.rope_frequency import RopeFrequency")
    lines += [
        "",
        f"torch.manual_seed({run['seed']!r})",
        f"device = {_device_expression(run['device'])}",
        f"dtype = torch.{run['dtype']}",
        f"batch_size = {run['batch_size']!r}",
        "",
        "token_specs = [",
        *_spec_lines(specs, comment_cached=True),
        "]",
    ]
    pattern_lines = [
        f"    AttentionPattern(query_tokens={p['query_tokens']!r}, key_value_tokens={p['key_value_tokens']!r}),"
        for p in data["attention_patterns"]
    ]
    if kind == "mixed":
        lines += ["attention_patterns = [", *pattern_lines, "]"]
    else:
        lines += [f"# {module_class} generates its patterns from the branches; for these groups they are:"]
        lines += [f"#   {line.strip()}" for line in pattern_lines]
    lines += [
        *_call_lines(f"config = {config_class}", _config_kwargs(scenario)),
        f"module = {module_class}(config).to(device=device, dtype=dtype).eval()",
        "",
    ]
    if use_rope:
        lines += _rope_lines(head_dim)
    if cached:
        lines += _cached_pass_lines(scenario, specs, cached, patterns_argument, rope_dim)
    extra_arguments = ", kv_cache=kv_cache" if cached else ""
    if run["padding"]:
        lines += [
            "# The last tokens of these groups are padding: key_padding_mask is False there (never attended).",
            f"padding = {run['padding']!r}",
            "key_padding_mask = torch.cat([",
            "    torch.arange(spec.size, device=device) < spec.size - padding.get(spec.name, 0)",
            "    for spec in token_specs",
            "]).expand(batch_size, -1)",
        ]
        extra_arguments += ", key_padding_mask=key_padding_mask"
    extra_arguments += _freqs_argument(rope_dim, input_tokens)
    lines += [
        f"x = torch.randn(batch_size, {input_tokens}, {hidden_dim}, device=device, dtype=dtype)",
        "with torch.no_grad():",
        f"    out, _ = module(x, token_specs{patterns_argument}{extra_arguments})",
        'print("output shape:", tuple(out.shape))',
    ]
    return "\n".join(lines) + "\n"


def _cached_pass_lines(
    scenario: Scenario,
    specs: list[tuple[str, int | None]],
    cached: list[str],
    patterns_argument: str,
    rope_dim: int | None,
) -> list[str]:
    """Pass 1 (the anchor pass) that fills kv_cache for the cached groups of pass 2."""
    hidden_dim, num_heads = scenario.attention.hidden_dim, scenario.attention.num_heads
    head_dim = hidden_dim // num_heads
    anchor_specs = [(name, scenario.cache_size(name) if size is None else size) for name, size in specs]
    anchor_tokens = sum(size for _, size in anchor_specs if size is not None)
    from_pass = [name for name in cached if "_anchor" in name]
    stand_ins = [name for name in cached if "_anchor" not in name]
    lines = [
        "# Cached groups (size None) are not part of x: their keys/values come from a kv_cache that an earlier pass",
        "# returns. Pass 1 (the anchor pass) runs every group as input, the cached ones with the number of tokens to",
        '# cache; the module returns the keys/values of the groups whose name contains "_anchor" as its new kv_cache.',
        "anchor_specs = [",
        *_spec_lines(anchor_specs, comment_cached=False),
        "]",
        f"anchor_x = torch.randn(batch_size, {anchor_tokens}, {hidden_dim}, device=device, dtype=dtype)",
        "with torch.no_grad():",
        f"    _, new_kv_cache = module(anchor_x, anchor_specs{patterns_argument}"
        f"{_freqs_argument(rope_dim, anchor_tokens)})",
        f"kv_cache = {{name: new_kv_cache[name] for name in {from_pass!r}}}",
    ]
    if stand_ins:
        lines.append(
            '# These cached groups lack "_anchor" in their name, so pass 1 does not return them: stand-in keys/values'
        )
        lines.append("# of shape (batch, heads, tokens, head_dim).")
        for name in stand_ins:
            shape = f"batch_size, {num_heads}, {scenario.cache_size(name)}, {head_dim}"
            lines.append(
                f"kv_cache[{name!r}] = {{key: torch.randn({shape}, device=device, dtype=dtype) for key in ('k', 'v')}}"
            )
    return [*lines, "", "# Pass 2: only the input groups are in x; their queries read the cached keys/values."]
