"""Layers of a capture: every recorded call as a scenario plus its recorded tensors, runnable and verifiable.

Each kind of call has a converter (``CONVERTERS``) that turns it into a :class:`Layer`: a scenario that validates
like any other, and the :class:`CapturedInputs` the engine runs it with. A kind without a converter, or a call a
converter cannot represent, is listed with the reason instead of being dropped.

This module holds the layer record, the registry, the lookups and where a layer's tokens lie; the converters live in
``capture_mixed`` (mixed, dot_product) and ``capture_perceiver``, their shared pieces in ``capture_convert``, and
running and verifying a layer in ``capture_verify``. Every name is importable from here as before.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from noether.explorer.capture_file import CallEntry, Capture
from noether.explorer.capture_verify import Verification, _describe, layer_run, verify_layer
from noether.explorer.group_match import joined_groups
from noether.explorer.inputs import CapturedInputs, token_positions
from noether.explorer.layout import Group, TokenLayout
from noether.explorer.problems import ExplorerError, Problem, did_you_mean
from noether.explorer.scenario import Scenario

__all__ = [
    "CONVERTERS",
    "Converter",
    "Layer",
    "Verification",
    "capture_layers",
    "converter",
    "find_layer",
    "layer_of",
    "layer_run",
    "resolve_layer_id",
    "verify_layer",
]


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
# Where a layer's tokens lie (every converter places its groups with these)
# --------------------------------------------------------------------------------------------------------------------


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
) -> tuple[torch.Tensor, list[str], frozenset[str]]:
    """Recorded coordinates per group on the key axis; groups without them get placeholder positions (noted). Also
    the names of the groups that got recorded ones.

    Positions are resolved per call: a name recorded with another size than this call's group (a perceiver's
    ``queries``: every anchor and query in the anchor pass, the queries alone in the inference pass) is other tokens.

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
    recorded_names = frozenset(g.name for g in layout.groups if g.name not in missing)
    return torch.cat(parts, dim=1), notes, recorded_names


_MOVED_TO_CAPTURE_MIXED = ("DOT_PRODUCT_GROUP", "dot_product_layer", "mixed_layer")


def __getattr__(name: str) -> Any:
    # Read lazily: capture_mixed imports this module, so a plain import here would break when it is imported first.
    if name in _MOVED_TO_CAPTURE_MIXED:
        from noether.explorer import capture_mixed

        return getattr(capture_mixed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Converters live in their own modules and register themselves on import.
from noether.explorer import capture_mixed, capture_perceiver  # noqa: E402, F401
