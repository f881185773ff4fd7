"""Layers of a capture: every recorded call as a scenario plus its recorded tensors, runnable and verifiable.

Each kind of call has a converter (``CONVERTERS``) that turns it into a :class:`Layer`: a scenario that validates
like any other, and the :class:`CapturedInputs` the engine runs it with. A kind without a converter, or a call a
converter cannot represent, is listed with the reason instead of being dropped.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from noether.explorer.capture_file import CallEntry, Capture, tolerance
from noether.explorer.group_match import joined_groups
from noether.explorer.inputs import CapturedInputs, token_positions
from noether.explorer.layout import Group, TokenLayout
from noether.explorer.problems import ExplorerError, Problem, did_you_mean
from noether.explorer.scenario import Scenario, validate_scenario

DOT_PRODUCT_GROUP = "tokens"
"""Name of the single group a dot_product call becomes (full self-attention over all its tokens)."""
_CONFIG_KEYS = ("hidden_dim", "num_heads", "use_rope", "bias", "qk_norm")


@dataclass
class Layer:
    """One recorded call: what it is, and (when explorable) its scenario and recorded tensors."""

    id: str
    module: str
    kind: str
    class_name: str
    scenario: Scenario | None = None
    make_inputs: Callable[[], CapturedInputs] | None = None
    """Builds the recorded inputs on demand, so that listing a capture's layers copies no tensor."""
    output: torch.Tensor | None = None
    """The module's recorded output, for verification."""
    reason: str = ""
    """Why the layer is not explorable (empty when it is)."""
    notes: list[str] = field(default_factory=list)

    @property
    def explorable(self) -> bool:
        return self.scenario is not None and self.make_inputs is not None

    @property
    def captured(self) -> CapturedInputs | None:
        """The recorded inputs on the run's key axis (built anew on each access)."""
        return None if self.make_inputs is None else self.make_inputs()

    @captured.setter
    def captured(self, inputs: CapturedInputs | None) -> None:
        """Converters that have the inputs at hand may set them directly."""
        self.make_inputs = None if inputs is None else (lambda: inputs)


Converter = Callable[[Capture, CallEntry], Layer]
CONVERTERS: dict[str, Converter] = {}
"""kind -> converter; adding a kind is one function registered with :func:`converter`."""


def converter(kind: str) -> Callable[[Converter], Converter]:
    def register(function: Converter) -> Converter:
        CONVERTERS[kind] = function
        return function

    return register


def _blank(capture: Capture, call: CallEntry) -> Layer:
    module = capture.manifest.modules[call.module]
    layer = Layer(id=call.id, module=call.module, kind=call.kind, class_name=module.class_name)
    if (call.model_extra or {}).get("training") is True:
        layer.notes.append(
            "the module was in training mode when recorded: if it uses dropout, the recorded output is not "
            "reproducible and verification will differ."
        )
    return layer


def _refused(layer: Layer, reason: str) -> Layer:
    layer.reason = reason
    return layer


def layer_of(capture: Capture, call: CallEntry) -> Layer:
    """The layer of one call: converted, or listed with the reason it cannot be explored."""
    module = capture.manifest.modules[call.module]
    recorded = {entry.id: entry.reason for entry in capture.manifest.not_explorable}
    if call.id in recorded or not module.explorable:
        return _refused(_blank(capture, call), recorded.get(call.id) or f"{module.class_name} is not explorable yet.")
    convert = CONVERTERS.get(call.kind)
    if convert is None:
        return _refused(
            _blank(capture, call),
            f"not explorable yet: the explorer has no converter for kind '{call.kind}' ({module.class_name}).",
        )
    try:
        return convert(capture, call)
    except (ExplorerError, ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
        # A manifest that passed the reader's checks but that a converter cannot map is listed, never a traceback.
        return _refused(_blank(capture, call), f"its recorded arguments could not be converted ({_describe(exc)}).")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ExplorerError):
        return "; ".join(str(p) for p in exc.problems)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def capture_layers(capture: Capture) -> list[Layer]:
    """Every call of the capture, in call order."""
    return [layer_of(capture, call) for call in capture.manifest.calls]


def resolve_layer_id(capture: Capture, text: str) -> str:
    """``PATH#N`` as given, or ``PATH`` of a module called once; ExplorerError naming the choices otherwise."""
    ids = capture.call_ids
    if text in ids:
        return text
    calls = [call.id for call in capture.manifest.calls if call.module == text]
    if len(calls) == 1:
        return calls[0]
    if calls:
        raise ExplorerError(Problem("--layer", f"'{text}' was called {len(calls)} times.", f"Give one of {calls[:8]}."))
    shown = ", ".join(ids[:12]) + (", ..." if len(ids) > 12 else "")
    raise ExplorerError(
        Problem(
            "--layer",
            f"'{text}' is not a call in the capture.",
            (did_you_mean(text, ids) + f" Calls: {shown} (see capture-info).").strip(),
        )
    )


def find_layer(capture: Capture, text: str) -> Layer:
    """The layer named by ``PATH[#N]``; ExplorerError when unknown or not explorable (with the reason)."""
    call_id = resolve_layer_id(capture, text)
    layer = layer_of(capture, capture.call(call_id))
    if not layer.explorable:
        raise ExplorerError(Problem(f"layer '{call_id}'", layer.reason, "Pick an explorable layer (capture-info)."))
    return layer


# --------------------------------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------------------------------


def _attention(capture: Capture, call: CallEntry) -> dict[str, Any]:
    config = capture.manifest.modules[call.module].config
    return {"kind": "mixed", **{key: config[key] for key in _CONFIG_KEYS if key in config}}


def _inconsistency(capture: Capture, call: CallEntry, freqs: torch.Tensor | None) -> str:
    """Why the recorded arguments contradict the module's config (the module would have refused them), or ''."""
    use_rope = bool(capture.manifest.modules[call.module].config.get("use_rope", False))
    if use_rope != (freqs is not None):
        return f"the module's config says use_rope={use_rope} but RoPE freqs were {'not ' if use_rope else ''}recorded."
    cached = [spec.get("name") for spec in call.token_specs or [] if spec.get("size") is None]
    missing = [name for name in cached if name not in call.caches()]
    if missing:
        return f"cached groups {missing} have no keys/values in the recorded kv_cache."
    return ""


def _scenario(layer: Layer, data: Mapping[str, Any]) -> Scenario | None:
    report = validate_scenario(data)
    if report.scenario is None:
        problems = "; ".join(str(p) for p in report.problems if p.severity == "error")
        layer.reason = f"its recorded structure is not a valid scenario: {problems}"
    return report.scenario


def _trailing_padding(mask: torch.Tensor, specs: list[dict[str, Any]]) -> dict[str, int] | None:
    """run.padding when ``mask`` pads each group at its end by the same count in every sample, else None."""
    padding, start = {}, 0
    for spec in specs:
        size = spec["size"]
        if size is None:
            continue
        part = mask[:, start : start + size]
        start += size
        real = part.sum(1)
        if not bool((real == real[0]).all()):
            return None
        count = int(real[0])
        if not bool(part[:, :count].all()) or bool(part[:, count:].any()):
            return None
        if count < size:
            padding[spec["name"]] = size - count
    return padding


def _linked_rows(capture: Capture, call: CallEntry, group: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """x and freqs rows of a cached group from the recorded call whose new_kv_cache filled this call's cache."""
    wanted = capture.tensors[call.caches()[group].k]
    for earlier in capture.manifest.calls:
        made_cache = earlier.caches("new_kv_cache")
        if earlier.id == call.id or group not in made_cache:
            continue
        made = capture.tensors[made_cache[group].k]
        if made.shape != wanted.shape or not torch.equal(made, wanted) or not earlier.token_specs:
            continue
        start = 0
        for spec in earlier.token_specs:
            size = spec.get("size")
            if spec.get("name") == group and isinstance(size, int):
                x = capture.tensors[earlier.inputs["x"] or ""][:, start : start + size]
                freqs_key = earlier.inputs.get("freqs")
                freqs = None if freqs_key is None else capture.tensors[freqs_key][:, start : start + size]
                return x, freqs
            start += size if isinstance(size, int) else 0
    return None


def _key_axis(
    capture: Capture, call: CallEntry, layout: TokenLayout, x: torch.Tensor, freqs: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """x and freqs on the key axis: input groups from the call, cached groups from their filling pass (or zeros)."""
    if not layout.has_cache:
        return x, freqs, True
    batch = x.shape[0]
    xs, fs, known, start = [], [], True, 0
    for group in layout.groups:
        if group.cached:
            linked = _linked_rows(capture, call, group.name)
            if linked is None:
                known = False
                xs.append(x.new_zeros(batch, group.size, x.shape[-1]))
                if freqs is not None:
                    fs.append(freqs.new_ones(freqs.shape[0], group.size, freqs.shape[-1]))
            else:
                xs.append(linked[0].to(x.dtype))
                if freqs is not None:
                    rows = linked[1]
                    if rows is None:
                        rows = freqs.new_ones(freqs.shape[0], group.size, freqs.shape[-1])
                    fs.append(rows.expand(freqs.shape[0], -1, -1))
        else:
            xs.append(x[:, start : start + group.size])
            if freqs is not None:
                fs.append(freqs[:, start : start + group.size])
            start += group.size
    return torch.cat(xs, dim=1), (torch.cat(fs, dim=1) if freqs is not None else None), known


def _points(points: torch.Tensor | None, size: int, batch: int) -> torch.Tensor | None:
    """(batch, size, 3) float coordinates from recorded ones, or None when they are not one per token."""
    if points is not None and points.ndim == 2:
        points = points.expand(batch, -1, -1)
    if points is None or points.shape[0] != batch or points.shape[1] != size or points.shape[-1] > 3:
        return None
    points = points.float()
    if points.shape[-1] < 3:  # 1-D or 2-D coordinates lie in the first axes of the 3-D view
        points = torch.cat([points, points.new_zeros(*points.shape[:-1], 3 - points.shape[-1])], dim=-1)
    return points


def _following_groups(capture: Capture, call: CallEntry) -> list[Group]:
    """Input groups of the call recorded right after ``call``; empty when there is none or it is not explorable."""
    calls = capture.manifest.calls
    index = next((i for i, other in enumerate(calls) if other.id == call.id), len(calls))
    if index + 1 >= len(calls):
        return []
    following = layer_of(capture, calls[index + 1])
    return [] if following.scenario is None else TokenLayout.from_scenario(following.scenario).query_groups


def _positions(
    capture: Capture, call: CallEntry, scenario: Scenario, layout: TokenLayout
) -> tuple[torch.Tensor, list[str]]:
    """Recorded coordinates per group on the key axis; groups without them get placeholder positions (noted).

    A group recorded under other names (a perceiver's ``queries`` that are the next call's ``surface_queries`` and
    ``volume_queries``) is matched as the rollout matches it: :func:`~noether.explorer.group_match.joined_groups`.
    """
    recorded = capture.positions()
    placeholder = token_positions(scenario, layout)
    batch = scenario.run.batch_size
    parts, missing, notes = [], [], []
    for group in layout.groups:
        points = _points(recorded.get(group.name), group.size, batch)
        if points is None and group.query_offset is not None:
            joined = joined_groups(layout.query_groups, _following_groups(capture, call))
            pieces = [_points(recorded.get(name), size, batch) for name, size in joined or []]
            if joined and all(piece is not None for piece in pieces):
                points = torch.cat(pieces, dim=1)  # type: ignore[arg-type]
                names = ", ".join(name for name, _ in joined)
                notes.append(f"'{group.name}' placed at the recorded positions of {names} (the next call's groups).")
        if points is None:
            missing.append(group.name)
            points = placeholder[:, group.input_span]
        parts.append(points)
    if missing:
        notes.append(
            f"no recorded positions for {missing} (or not one per token): the spatial view places them at random."
        )
    return torch.cat(parts, dim=1), notes


def _captured(
    capture: Capture,
    call: CallEntry,
    scenario: Scenario,
    x: torch.Tensor,
    freqs: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> CapturedInputs:
    layout = TokenLayout.from_scenario(scenario)
    if freqs is not None and freqs.shape[0] != x.shape[0]:
        freqs = freqs.expand(x.shape[0], -1, -1)
    x_keys, freqs_keys, known = _key_axis(capture, call, layout, x.float(), freqs)
    positions, notes = _positions(capture, call, scenario, layout)
    cache = None
    if call.caches():
        cache = {
            name: {"k": capture.tensors[entry.k].float(), "v": capture.tensors[entry.v].float()}
            for name, entry in call.caches().items()
        }
    return CapturedInputs(
        x=x_keys,
        freqs=freqs_keys,
        positions=positions,
        state_dict=capture.module_state_dict(call.module),
        key_padding_mask=mask,
        kv_cache=cache,
        cached_inputs_known=known,
        notes=notes,
    )


@converter("mixed")
def mixed_layer(capture: Capture, call: CallEntry) -> Layer:
    """A MixedAttention call (and every anchor module built on it): its groups, patterns and recorded tensors."""
    layer = _blank(capture, call)
    if not call.token_specs or call.attention_patterns is None or call.inputs.get("x") is None:
        return _refused(layer, "the call has no token_specs, attention_patterns or x recorded.")
    x = capture.tensors[call.inputs["x"]]
    freqs = capture.tensor(call.inputs.get("freqs"))
    mask = capture.tensor(call.inputs.get("key_padding_mask"))
    if _inconsistency(capture, call, freqs):
        return _refused(layer, _inconsistency(capture, call, freqs))
    specs = [{"name": spec.get("name"), "size": spec.get("size")} for spec in call.token_specs]
    cache_sizes = {}
    for spec in specs:
        if spec["size"] is None and spec["name"] in call.caches():
            cache_sizes[spec["name"]] = int(capture.tensors[call.caches()[spec["name"]].k].shape[2])
    padding = {}
    if mask is not None:
        padding = _trailing_padding(mask, specs)
        if padding is None:
            padding = {}
            layer.notes.append(
                "the recorded key_padding_mask is not trailing padding shared by all samples: weights, statistics "
                "and outputs use it exactly; the token mask view and the cost count every key as real."
            )
    data = {
        "attention": _attention(capture, call),
        "token_specs": specs,
        "attention_patterns": call.attention_patterns,
        "run": {"batch_size": x.shape[0], "kv_cache_sizes": cache_sizes, "padding": padding},
    }
    layer.scenario = _scenario(layer, data)
    if layer.scenario is not None:
        scenario = layer.scenario
        layer.make_inputs = lambda: _captured(capture, call, scenario, x, freqs, mask)
        layer.output = capture.tensor(call.output)
    return layer


def _key_mask_of(attn_mask: torch.Tensor, batch: int, tokens: int, keys: int | None = None) -> torch.Tensor | None:
    """A (batch, keys) key mask equivalent to ``attn_mask`` when it masks keys only, else None (``tokens`` queries;
    ``keys`` defaults to ``tokens``, as in self-attention)."""
    mask = attn_mask
    if mask.dtype != torch.bool:
        # Additive masks: 0 keeps a key; -inf (or the dtype's lowest finite value, as recorders store it) drops it.
        dropped = mask <= torch.finfo(mask.dtype).min / 2
        if not bool(((mask == 0) | dropped).all()):
            return None
        mask = mask == 0
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    try:
        full = mask.expand(batch, mask.shape[1], tokens, tokens if keys is None else keys)
    except RuntimeError:
        return None
    rows = full[:, :1, :1, :]
    if not bool((full == rows).all()):
        return None
    return rows[:, 0, 0, :].clone()


@converter("dot_product")
def dot_product_layer(capture: Capture, call: CallEntry) -> Layer:
    """Full self-attention over one group; a recorded attn_mask is kept when it only masks keys."""
    layer = _blank(capture, call)
    x = capture.tensor(call.inputs.get("x"))
    if x is None:
        return _refused(layer, "the call has no x recorded.")
    if _inconsistency(capture, call, capture.tensor(call.inputs.get("freqs"))):
        return _refused(layer, _inconsistency(capture, call, capture.tensor(call.inputs.get("freqs"))))
    batch, tokens = x.shape[0], x.shape[1]
    mask = None
    attn_mask = capture.tensor(call.inputs.get("attn_mask"))
    if attn_mask is not None:
        mask = _key_mask_of(attn_mask, batch, tokens)
        if mask is None:
            return _refused(
                layer,
                f"its attn_mask {tuple(attn_mask.shape)} varies by query or head; the explorer represents a "
                "dot_product call as one group of full self-attention, optionally with masked keys.",
            )
        if bool(mask.all()):
            mask = None
    specs = [{"name": DOT_PRODUCT_GROUP, "size": tokens}]
    padding = {} if mask is None else (_trailing_padding(mask, specs) or {})
    data = {
        "attention": _attention(capture, call),
        "token_specs": specs,
        "attention_patterns": [{"query_tokens": [DOT_PRODUCT_GROUP], "key_value_tokens": [DOT_PRODUCT_GROUP]}],
        "run": {"batch_size": batch, "padding": padding},
    }
    layer.scenario = _scenario(layer, data)
    if layer.scenario is not None:
        scenario, freqs = layer.scenario, capture.tensor(call.inputs.get("freqs"))
        layer.make_inputs = lambda: _captured(capture, call, scenario, x, freqs, mask)
        layer.output = capture.tensor(call.output)
        layer.notes.append(f"a {layer.class_name} call: one group '{DOT_PRODUCT_GROUP}' of full self-attention.")
    return layer


# --------------------------------------------------------------------------------------------------------------------
# Running and verifying
# --------------------------------------------------------------------------------------------------------------------


def layer_run(layer: Layer, **options: Any) -> Any:
    """An ExplorerRun of the layer with its recorded inputs and weights (options as for ExplorerRun)."""
    from noether.explorer.run import ExplorerRun

    if not layer.explorable:
        raise ExplorerError(Problem(f"layer '{layer.id}'", layer.reason, "Pick an explorable layer."))
    run = ExplorerRun(layer.scenario, captured=layer.captured, **options)  # type: ignore[arg-type]
    run.notes += layer.notes
    return run


@dataclass(frozen=True)
class Verification:
    """A layer recomputed from its capture against the output the model produced."""

    layer: str
    max_abs_diff: float
    tolerance: float
    tolerance_text: str

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def problem(self) -> Problem | None:
        if self.ok:
            return None
        return Problem(
            f"layer '{self.layer}'",
            f"recomputed output differs from the recorded one by {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance_text}).",
            "The module in the capture does not behave like the explorer's MixedAttention; report it with the file.",
        )


def verify_layer(layer: Layer, run: Any, dtype: torch.dtype) -> Verification:
    """Recompute the layer's forward pass with ``run`` and compare with the recorded output."""
    if layer.output is None:
        raise ExplorerError(Problem(f"layer '{layer.id}'", "has no recorded output to verify against."))
    recorded = layer.output.float()
    try:
        output = run.forward().output
    except (ValueError, RuntimeError) as exc:  # the module refused the recorded arguments
        raise ExplorerError(
            Problem(f"layer '{layer.id}'", f"could not be recomputed from its recorded arguments ({_describe(exc)}).")
        ) from None
    diff = float((output - recorded).abs().max()) if recorded.numel() else 0.0
    scale = float(recorded.abs().max()) if recorded.numel() else 0.0
    tol, text = tolerance(dtype, scale)
    return Verification(layer=layer.id, max_abs_diff=diff, tolerance=tol, tolerance_text=text)


# Converters of further kinds live in their own modules and register themselves on import.
from noether.explorer import capture_perceiver  # noqa: E402, F401
