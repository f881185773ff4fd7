"""Record the demo capture from upstream ``emmiai-noether==2026.4.0``'s own AB-UPT, trained briefly on the sample car.

The model is upstream's ``AnchoredBranchedUPT`` (``noether/modeling/models/ab_upt.py`` in the wheel), built from
upstream's ``AnchorBranchedUPTConfig`` and run unmodified. It is trained for a few minutes on CPU (fixed seeds) to
predict a smooth, pressure-like field over the sample car's surface and volume, so that its attention is learned
rather than the near-uniform attention of upstream's 0.02 initialisation. Then one ``capture_attention`` block records
every attention call of two forward passes:

1. an anchor pass over surface and volume anchors plus queries, with the geometry branch (returns the KV cache);
2. the inference pass ``model(domain_query_positions=..., kv_cache=cache)`` over the same query points.

Output: ``noether/explorer/assets/demo_capture.safetensors`` (float32 activations, so that every layer re-verifies
within 1e-5). It is NOT part of the test suite; the tests only read the file.

Environment (Python 3.11, CPU only; the same one ``scripts/make_upstream_fixtures.py`` uses)::

    python3 -m venv upstream-venv
    upstream-venv/bin/pip install torch==2.13.0 einops pydantic safetensors numpy loguru
    upstream-venv/bin/pip download --no-deps --ignore-requires-python emmiai-noether==2026.4.0 -d wheels
    upstream-venv/bin/pip install --no-deps --ignore-requires-python wheels/emmiai_noether-2026.4.0-py3-none-any.whl
    upstream-venv/bin/python scripts/make_demo_capture.py

Workarounds needed to run upstream 2026.4.0 on Python 3.11 (upstream's code itself is executed unmodified):

* The wheel declares ``Requires-Python >=3.12`` and pins heavy dependencies, so it is installed with ``--no-deps
  --ignore-requires-python``; torch, einops, pydantic and numpy are all the model needs (safetensors for the file).
* Five upstream files use Python 3.12-only syntax, PEP 695 type parameters on class/function headers:
  ``noether/core/schemas/{dataset,trainers,schema,lib}.py`` and ``noether/core/utils/bidict.py``. Each of them
  already defines a module-level ``TypeVar`` of the same name and bound, so an import hook (``Pep695Rewriter``)
  rewrites only those headers when the modules load: ``class C[T: B](Base):`` becomes
  ``class C(Base, typing.Generic[T]):`` and ``def f[T: B](...)`` becomes ``def f(...)``. The files on disk stay as
  they are.
* ``noether/modeling/models/__init__.py`` imports every model, and ``aerodynamics`` reaches ``omegaconf``; the
  package is registered as a bare namespace pointing at its directory so that only ``ab_upt.py`` is executed.
* Inside this environment the name ``noether`` is upstream's, so this project's recorder
  (``noether/explorer/capture.py``, which imports only torch, safetensors and the standard library) is loaded by file
  path under the name ``noether_capture``, exactly as the README tells users who record with upstream installed.
* No torch_cluster/triton: upstream's supernode pooling falls back to its pure-PyTorch kNN on CPU.
* Attention is hooked on the attention modules themselves (upstream's MixedAttention multiplies by its q/k/v
  weights directly, so hooks on the q/k/v Linear layers would never fire); ``capture_attention`` does this.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import math
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "noether" / "explorer" / "assets" / "sample_point_cloud.npz"
RECORDER = REPO_ROOT / "noether" / "explorer" / "capture.py"
OUT = REPO_ROOT / "noether" / "explorer" / "assets" / "demo_capture.safetensors"
UPSTREAM_VERSION = "2026.4.0"
MAX_BYTES = 20 * 1024 * 1024

SEED = 0
HIDDEN, HEADS = 64, 4
PHYSICS_BLOCKS = ["perceiver", "self", "cross", "joint"]
POSITION_SCALE = 100.0
"""Metres -> model units: the sine-cosine embeddings and RoPE resolve the car (4.5 m) over ~450 units."""
ANCHORS, QUERIES = 896, 448
"""Recorded tokens per domain (surface and volume): anchors, and queries read by both passes."""
GEOMETRY_POINTS, SUPERNODES, KNN = 4096, 256, 8
TRAIN_STEPS, TRAIN_ANCHORS, LEARNING_RATE = 90, 256, 3e-3
PEP695_MODULES = frozenset(
    {
        "noether.core.schemas.dataset",
        "noether.core.schemas.trainers",
        "noether.core.schemas.schema",
        "noether.core.schemas.lib",
        "noether.core.utils.bidict",
    }
)


# ----------------------------------------------------------------------------------------------------------------
# Loading upstream on Python 3.11
# ----------------------------------------------------------------------------------------------------------------
def _closing(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing the one at ``start``."""
    depth = 0
    for index in range(start, len(text)):
        depth += text[index] == open_
        depth -= text[index] == close
        if depth == 0:
            return index
    raise SyntaxError(f"unbalanced {open_!r} at offset {start}")


def _type_parameter_names(parameters: str) -> list[str]:
    names, depth, current = [], 0, ""
    for char in parameters + ",":
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            if current.strip():
                names.append(current.split(":")[0].strip())
            current = ""
        else:
            current += char
    return names


def rewrite_pep695(source: str) -> str:
    """Drop PEP 695 type parameters from class/def headers; classes inherit ``typing.Generic[...]`` instead."""
    header = re.compile(r"^([ \t]*)(class|def) (\w+)\[", re.MULTILINE)
    out, position = [], 0
    for match in header.finditer(source):
        bracket = match.end() - 1
        end = _closing(source, bracket, "[", "]")
        names = _type_parameter_names(source[bracket + 1 : end])
        out.append(source[position : match.start()] + f"{match.group(1)}{match.group(2)} {match.group(3)}")
        position = end + 1
        if match.group(2) == "def":
            continue
        generic = f"__import__('typing').Generic[{', '.join(names)}]"
        if source[position] == "(":
            close = _closing(source, position, "(", ")")
            bases = source[position + 1 : close].rstrip().rstrip(",")
            out.append(f"({bases}, {generic})")
            position = close + 1
        else:
            out.append(f"({generic})")
    return "".join(out) + source[position:]


class Pep695Loader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> Any:  # type: ignore[override]
        return compile(rewrite_pep695(data.decode("utf-8")), path, "exec", dont_inherit=True)


class Pep695Rewriter(importlib.abc.MetaPathFinder):
    """Loads the five PEP 695 modules of upstream through :func:`rewrite_pep695`."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in PEP695_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = Pep695Loader(name, spec.origin)
        return spec


def load_upstream() -> types.SimpleNamespace:
    sys.meta_path.insert(0, Pep695Rewriter())
    import noether
    import noether.modeling

    models = types.ModuleType("noether.modeling.models")
    models.__path__ = [str(Path(noether.__file__).parent / "modeling" / "models")]
    models.__package__ = "noether.modeling.models"
    sys.modules["noether.modeling.models"] = models
    noether.modeling.models = models  # type: ignore[attr-defined]

    from noether.core.schemas.dataset import ModelDataSpecs
    from noether.core.schemas.models import AnchorBranchedUPTConfig
    from noether.core.schemas.modules.blocks import TransformerBlockConfig
    from noether.core.schemas.modules.encoders import SupernodePoolingConfig
    from noether.modeling.models.ab_upt import AnchoredBranchedUPT

    assert importlib.metadata.version("emmiai-noether") == UPSTREAM_VERSION
    return types.SimpleNamespace(
        AnchoredBranchedUPT=AnchoredBranchedUPT,
        AnchorBranchedUPTConfig=AnchorBranchedUPTConfig,
        ModelDataSpecs=ModelDataSpecs,
        TransformerBlockConfig=TransformerBlockConfig,
        SupernodePoolingConfig=SupernodePoolingConfig,
        rewritten=sorted(name for name in PEP695_MODULES if name in sys.modules),
    )


def load_recorder() -> types.ModuleType:
    """This project's capture module under its own name (``noether`` is upstream's here)."""
    spec = importlib.util.spec_from_file_location("noether_capture", RECORDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["noether_capture"] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------------
# Model, data, target field
# ----------------------------------------------------------------------------------------------------------------
def build_model(up: types.SimpleNamespace) -> torch.nn.Module:
    config = up.AnchorBranchedUPTConfig(
        name="demo_ab_upt",
        hidden_dim=HIDDEN,
        geometry_depth=1,
        physics_blocks=PHYSICS_BLOCKS,
        num_domain_decoder_blocks={"surface": 1, "volume": 1},
        transformer_block_config=up.TransformerBlockConfig(
            hidden_dim=HIDDEN, num_heads=HEADS, mlp_expansion_factor=2, use_rope=True
        ),
        supernode_pooling_config=up.SupernodePoolingConfig(hidden_dim=HIDDEN, input_dim=3, k=KNN),
        data_specs=up.ModelDataSpecs(
            position_dim=3,
            domains={"surface": {"output_dims": {"pressure": 1}}, "volume": {"output_dims": {"pressure": 1}}},
        ),
    )
    return up.AnchoredBranchedUPT(config)


def pressure(points: torch.Tensor) -> torch.Tensor:
    """A smooth pressure-like field (metres in, (..., 1) out): stagnation at the nose, suction over the roof,
    a low-pressure wake behind the car, decaying away from the body."""
    x, y, z = points.unbind(-1)
    nose = torch.exp(-(((x + 2.25) / 0.6) ** 2) - (y / 0.8) ** 2 - ((z - 0.5) / 0.5) ** 2)
    roof = -0.8 * torch.exp(-((x / 1.2) ** 2) - ((z - 1.4) / 0.4) ** 2) * torch.cos(y / 0.9 * math.pi / 2) ** 2
    wake = -0.5 * torch.exp(-(((x - 3.0) / 1.5) ** 2) - (y / 1.0) ** 2 - ((z - 0.6) / 0.7) ** 2)
    ripple = 0.15 * torch.sin(2.0 * x) * torch.cos(3.0 * y)
    return (nose + roof + wake + ripple).unsqueeze(-1)


class Car:
    """The sample point cloud (metres) and fixed draws from it."""

    def __init__(self) -> None:
        with np.load(SAMPLE, allow_pickle=False) as data:
            self.surface = torch.from_numpy(np.asarray(data["surface"], dtype=np.float32))
            self.volume = torch.from_numpy(np.asarray(data["volume"], dtype=np.float32))
        generator = torch.Generator().manual_seed(SEED)
        self.geometry = self.surface[torch.randperm(len(self.surface), generator=generator)[:GEOMETRY_POINTS]]
        self.supernode_idx = torch.randperm(GEOMETRY_POINTS, generator=generator)[:SUPERNODES]

    def draw(self, domain: str, n: int, generator: torch.Generator) -> torch.Tensor:
        pool = self.surface if domain == "surface" else self.volume
        return pool[torch.randperm(len(pool), generator=generator)[:n]]

    def geometry_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "geometry_position": self.geometry * POSITION_SCALE,
            "geometry_supernode_idx": self.supernode_idx,
            "geometry_batch_idx": torch.zeros(GEOMETRY_POINTS, dtype=torch.long),
        }


def anchor_pass(
    model: torch.nn.Module, car: Car, anchors: dict[str, torch.Tensor], queries: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], Any]:
    return model(
        **car.geometry_inputs(),
        domain_anchor_positions={name: points[None] * POSITION_SCALE for name, points in anchors.items()},
        domain_query_positions=None
        if queries is None
        else {name: points[None] * POSITION_SCALE for name, points in queries.items()},
    )


def train(model: torch.nn.Module, car: Car) -> tuple[float, float, int, float]:
    """Adam on the MSE of the anchor predictions, fresh anchors each step; returns start/end loss, steps, seconds."""
    generator = torch.Generator().manual_seed(SEED + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TRAIN_STEPS)
    model.train()
    start = time.perf_counter()
    losses = []
    for step in range(TRAIN_STEPS):
        anchors = {name: car.draw(name, TRAIN_ANCHORS, generator) for name in ("surface", "volume")}
        predictions, _ = anchor_pass(model, car, anchors)
        loss = sum(
            F.mse_loss(predictions[f"{name}_pressure"], pressure(points)[None]) for name, points in anchors.items()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 or step == TRAIN_STEPS - 1:
            print(f"step {step:4d}  loss {losses[-1]:.4f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    return losses[0], float(np.mean(losses[-10:])), TRAIN_STEPS, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------------------------
def record(model: torch.nn.Module, car: Car, recorder: types.ModuleType) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(SEED + 2)
    anchors = {name: car.draw(name, ANCHORS, generator) for name in ("surface", "volume")}
    queries = {name: car.draw(name, QUERIES, generator) for name in ("surface", "volume")}
    supernodes = car.geometry[car.supernode_idx]
    physics = torch.cat([torch.cat([anchors[name], queries[name]]) for name in ("surface", "volume")])
    # Positions in metres per token group name, as the explorer's layer scenarios name the groups: the anchor-attention
    # groups, the geometry encoder's single group ("tokens"), and the perceiver's query / key-value groups.
    positions = {
        **{f"{name}_anchors": anchors[name] for name in anchors},
        **{f"{name}_queries": queries[name] for name in queries},
        "tokens": supernodes,
        "queries": physics,
        "keys_values": supernodes,
    }
    with torch.no_grad(), recorder.capture_attention(model, positions=positions, max_bytes=MAX_BYTES) as cap:
        predictions, cache = anchor_pass(model, car, anchors, queries)
        inferred, _ = model(
            domain_query_positions={name: points[None] * POSITION_SCALE for name, points in queries.items()},
            kv_cache=cache,
        )
    agreement = max(
        float((inferred[f"query_{name}_pressure"] - predictions[f"query_{name}_pressure"]).abs().max())
        for name in queries
    )
    error = {
        name: float(F.mse_loss(predictions[f"query_{name}_pressure"], pressure(queries[name])[None]))
        for name in queries
    }
    cap.save(OUT)
    return {"calls": [call["id"] for call in cap.calls], "kv_agreement": agreement, "query_mse": error}


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    up = load_upstream()
    recorder = load_recorder()
    print(f"upstream emmiai-noether {UPSTREAM_VERSION}; PEP 695 headers rewritten in {up.rewritten}")
    model = build_model(up)
    car = Car()
    print(f"AnchoredBranchedUPT: {sum(p.numel() for p in model.parameters()):,} parameters, blocks {PHYSICS_BLOCKS}")
    start_loss, end_loss, steps, seconds = train(model, car)
    print(f"training: {steps} steps in {seconds:.0f} s, loss {start_loss:.4f} -> {end_loss:.4f} (mean of last 10)")
    summary = record(model, car, recorder)
    print(f"recorded {len(summary['calls'])} calls: {', '.join(summary['calls'])}")
    print(f"query-point MSE after training: {summary['query_mse']}")
    print(f"KV-cache inference vs anchor pass on the same queries: max |diff| {summary['kv_agreement']:.2e}")
    print(f"wrote {OUT.relative_to(REPO_ROOT)}: {OUT.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
