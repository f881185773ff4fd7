"""Running a capture's layer and checking it against the output the model produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from noether.explorer.capture_file import tolerance
from noether.explorer.problems import ExplorerError, Problem

if TYPE_CHECKING:
    from noether.explorer.capture_layers import Layer


def _describe(exc: Exception) -> str:
    if isinstance(exc, ExplorerError):
        return "; ".join(str(p) for p in exc.problems)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


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
