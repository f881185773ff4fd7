"""Trained weights: load a state_dict safely (safetensors or weights-only torch.load) and fit it to a scenario."""

import io
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from noether.explorer.problems import ExplorerError, Problem

MAX_CHECKPOINT_BYTES = 2 * 2**30
_CORE_KEYS = ("q.weight", "k.weight", "v.weight", "proj.weight")
_WRAPPER_KEYS = ("state_dict", "model", "module")


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or a checkpoint dict holding one (Noether checkpoints use "state_dict")."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key])
    raise ExplorerError(
        Problem(
            "weights",
            "the file holds no state_dict (a mapping of parameter names to tensors).",
            "Save the module's state_dict() with safetensors or torch.save.",
        )
    )


def _parse_safetensors_or_torch(data: bytes) -> object:
    if data[:2] != b"PK":  # torch.save's zip format; anything else is tried as safetensors first
        try:
            return load_safetensors(data)
        except Exception:
            pass
    # weights_only=True: tensors and plain containers only, never arbitrary pickled objects.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_state_dict_bytes(data: bytes, name: str = "weights") -> dict[str, torch.Tensor]:
    """Parse a state_dict from safetensors or torch.save bytes without unpickling arbitrary objects."""
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise ExplorerError(Problem(name, f"is {len(data) / 2**30:.1f} GB; the limit is 2 GB.", "Extract the layer."))
    try:
        obj = _parse_safetensors_or_torch(data)
    except Exception as exc:  # every parser failure is bad input here, reported in one line
        # PyTorch's own text advises loading with weights_only=False, which would run code from the file: it is
        # never shown; the message says what was refused and how to save the weights so that they load.
        raise ExplorerError(_refusal(name, exc)) from None
    return _unwrap(obj)


_SAVE_HINT = (
    "Save only the tensors: safetensors.torch.save_file(module.state_dict(), path), "
    "or torch.save(module.state_dict(), path)."
)


def _refusal(name: str, exc: Exception) -> Problem:
    text = str(exc)
    if "Weights only load failed" in text and "Unsupported global" in text:
        return Problem(
            name,
            "was refused: besides tensors it holds pickled Python objects (classes or functions), and loading them "
            "could run code from the file.",
            _SAVE_HINT,
        )
    return Problem(name, "is neither a safetensors file nor a torch checkpoint that holds only tensors.", _SAVE_HINT)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(Problem(str(path), "does not exist.", "Check the path."))
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise ExplorerError(Problem(str(path), "is larger than 2 GB.", "Save only the attention layer's weights."))
    return load_state_dict_bytes(path.read_bytes(), name=str(path))


def attention_prefixes(state_dict: Mapping[str, object]) -> list[str]:
    """Prefixes under which a full set of attention projections (q, k, v, proj) is stored, sorted."""
    found = []
    for key in state_dict:
        if key.endswith("q.weight"):
            prefix = key[: -len("q.weight")]
            if all(prefix + core in state_dict for core in _CORE_KEYS):
                found.append(prefix)
    return sorted(found)


def select_attention_weights(
    state_dict: Mapping[str, torch.Tensor], prefix: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of one attention layer (keys relative to the MixedAttention), and the prefix they came from.

    ``prefix`` picks a layer in a full-model checkpoint (e.g. "blocks.3.attn."); without it the file must hold
    exactly one attention layer.
    """
    prefixes = attention_prefixes(state_dict)
    if prefix is None:
        if not prefixes:
            raise ExplorerError(
                Problem(
                    "weights",
                    "no attention layer found: expected keys q.weight, k.weight, v.weight, proj.weight "
                    f"(with an optional prefix); the file has {sorted(state_dict)[:6]}...",
                    "Save a MixedAttention/DotProductAttention state_dict.",
                )
            )
        if len(prefixes) > 1:
            shown = ", ".join(repr(p) for p in prefixes[:8])
            raise ExplorerError(
                Problem(
                    "weights",
                    f"the file holds {len(prefixes)} attention layers ({shown}).",
                    "Choose one with the prefix option.",
                )
            )
        prefix = prefixes[0]
    elif prefix not in prefixes:
        raise ExplorerError(
            Problem("weights", f"no attention layer under prefix '{prefix}'.", f"Available prefixes: {prefixes}.")
        )
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}, prefix


_PROJECTIONS = tuple(f"{n}.{p}" for n in ("q", "k", "v", "proj") for p in ("weight", "bias"))


def _trained_width(key: str, got: tuple[int, ...]) -> int | None:
    """The hidden_dim a projection tensor of this shape belongs to (square weight, or bias), else None."""
    if key.endswith(".weight") and len(got) == 2 and got[0] == got[1]:
        return got[0]
    if key.endswith(".bias") and len(got) == 1:
        return got[0]
    return None


def _shape_hint(key: str, got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if key.endswith(_PROJECTIONS):
        width = _trained_width(key, got)
        if width is not None:
            return f"The checkpoint was trained with hidden_dim={width}; set attention.hidden_dim: {width}."
        return (
            "A projection of an attention layer is hidden_dim x hidden_dim; this one is not, so no hidden_dim fits "
            "it. The file is damaged or holds another kind of layer: pick another layer or re-save it."
        )
    if "norm" in key:
        return f"The checkpoint's head_dim is {got[0]}; set hidden_dim / num_heads so that head_dim = {got[0]}."
    return f"Expected shape {expected}."


def _width_problem(module_state: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> Problem | None:
    """One problem when every projection agrees on another hidden_dim (instead of one per tensor)."""
    shapes = {key: tuple(weights[key].shape) for key in _PROJECTIONS if key in weights and key in module_state}
    widths = {_trained_width(key, shape) for key, shape in shapes.items()}
    if len(shapes) < 2 or len(widths) != 1 or None in widths:
        return None
    width = widths.pop()
    current = module_state["q.weight"].shape[0] if "q.weight" in module_state else None
    if width is None or width == current:
        return None
    return Problem(
        "weights",
        f"the checkpoint's projections (q, k, v, proj) are {width} x {width}; the scenario's hidden_dim is {current}.",
        f"The checkpoint was trained with hidden_dim={width}; set attention.hidden_dim: {width}.",
    )


def _presence_hint(key: str, in_checkpoint: bool) -> str:
    """What to change in the scenario when ``key`` is only in the checkpoint (or only in the module)."""
    if "norm" in key:
        return (
            f"The checkpoint {'uses' if in_checkpoint else 'has no'} QK normalisation; "
            f"set attention.qk_norm: {'true' if in_checkpoint else 'false'}."
        )
    if key.endswith("bias"):
        return (
            f"The checkpoint {'has' if in_checkpoint else 'has no'} bias terms; "
            f"set attention.bias: {'true' if in_checkpoint else 'false'}."
        )
    return "Remove it, or pick the right layer prefix." if in_checkpoint else "The checkpoint is incomplete."


def fit_problems(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> list[Problem]:
    """Why ``weights`` would not load into ``module`` with strict=True, in scenario terms."""
    expected = module.state_dict()
    problems = []
    width = _width_problem(expected, weights)
    if width is not None:
        problems.append(width)
        weights = {key: value for key, value in weights.items() if key not in _PROJECTIONS}
        expected = {key: value for key, value in expected.items() if key not in _PROJECTIONS}
    for key, tensor in weights.items():
        if key not in expected:
            problems.append(
                Problem(
                    f"weights.{key}",
                    "is in the checkpoint but not in the module.",
                    _presence_hint(key, in_checkpoint=True),
                )
            )
        elif tuple(tensor.shape) != tuple(expected[key].shape):
            problems.append(
                Problem(
                    f"weights.{key}",
                    f"has shape {tuple(tensor.shape)}, the scenario needs {tuple(expected[key].shape)}.",
                    _shape_hint(key, tuple(tensor.shape), tuple(expected[key].shape)),
                )
            )
    problems += [
        Problem(f"weights.{key}", "is missing from the checkpoint.", _presence_hint(key, in_checkpoint=False))
        for key in expected
        if key not in weights
    ]
    return problems


def load_into(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Load with strict=True after explaining every mismatch (raises ExplorerError listing them all)."""
    problems = fit_problems(module, weights)
    if problems:
        raise ExplorerError(problems)
    reference = next(iter(module.state_dict().values()))
    module.load_state_dict({k: v.to(reference.device, reference.dtype) for k, v in weights.items()}, strict=True)
