"""The runnable Python snippet of a perceiver scenario (queries attend to a separate key/value tensor)."""

from typing import Any


def perceiver_snippet(data: dict[str, Any], config_lines: list[str], header: list[str], device: str) -> list[str]:
    """Snippet body for the canonical mapping ``data`` of a perceiver scenario.

    ``config_lines`` build ``config = PerceiverAttentionConfig(...)``; ``header`` holds the docstring and the
    ``torch`` import; ``device`` is the expression that picks the device. A cached key/value group (size None) is
    filled by a first pass, as a model's inference does.
    """
    attention, run = data["attention"], data["run"]
    hidden_dim, num_heads = attention["hidden_dim"], attention["num_heads"]
    head_dim = hidden_dim // num_heads
    kv_dim = attention.get("kv_dim") or hidden_dim
    (queries, n_queries), (kv_name, n_kv) = ((item["name"], item["size"]) for item in data["token_specs"])
    cached = n_kv is None
    kv_tokens = run["kv_cache_sizes"].get(kv_name, 1024) if cached else n_kv
    use_rope = bool(attention["use_rope"])
    lines = [*header]
    if use_rope:
        lines.append("from noether.core.schemas.modules.layers import RopeFrequencyConfig")
    lines.append("from noether.modeling.modules.attention import PerceiverAttention, PerceiverAttentionConfig")
    if use_rope:
        lines.append("from noether.modeling.modules.layers.rope_frequency import RopeFrequency")
    lines += [
        "",
        f"torch.manual_seed({run['seed']!r})",
        f"device = {device}",
        f"dtype = torch.{run['dtype']}",
        f"batch_size = {run['batch_size']!r}",
        "",
        *config_lines,
        "module = PerceiverAttention(config).to(device=device, dtype=dtype).eval()",
        "",
        f"# {queries!r}: {n_queries} query tokens; {kv_name!r}: {kv_tokens} key/value tokens of {kv_dim} features.",
        f"q = torch.randn(batch_size, {n_queries}, {hidden_dim}, device=device, dtype=dtype)",
        f"kv = torch.randn(batch_size, {kv_tokens}, {kv_dim}, device=device, dtype=dtype)",
    ]
    q_freqs = k_freqs = ""
    if use_rope:
        lines += [
            "rope = RopeFrequency(",
            f"    RopeFrequencyConfig(hidden_dim={head_dim}, input_dim=3, implementation='complex')",
            ").to(device)",
            f"q_freqs = rope(torch.rand(batch_size, {n_queries}, 3, device=device))",
            f"k_freqs = rope(torch.rand(batch_size, {kv_tokens}, 3, device=device))",
        ]
        q_freqs, k_freqs = ", q_freqs=q_freqs", ", k_freqs=k_freqs"
    lines.append("with torch.no_grad():")
    if cached:
        lines += [
            f"    # {kv_name!r} is cached: a first pass projects its keys/values, the second reads them from kv_cache.",
            f"    _, kv_cache = module(q, kv{q_freqs}{k_freqs})",
            f"    out, _ = module(q, None{q_freqs}, kv_cache=kv_cache)",
        ]
    else:
        lines.append(f"    out, kv_cache = module(q, kv{q_freqs}{k_freqs})")
    return [*lines, 'print("output shape:", tuple(out.shape))']
