"""Regenerate the capture files of the test corpus: one good capture and the bad ones derived from it.

The good capture is recorded with ``capture_attention`` from a tiny model of this package's modules (a dot-product
encoder and a mixed block; hidden 8, 2 heads, 6 tokens); each bad file breaks one thing a reader must refuse.

Usage: python scripts/make_capture_corpus.py
"""

import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from noether.core.schemas.modules.attention import AttentionPattern, TokenSpec
from noether.explorer.capture import capture_attention
from noether.modeling.modules.attention import (
    DotProductAttention,
    DotProductAttentionConfig,
    MixedAttention,
    MixedAttentionConfig,
)

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"
GOOD = CORPUS / "good" / "tiny.capture.safetensors"


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = DotProductAttention(DotProductAttentionConfig(hidden_dim=8, num_heads=2))
        self.block = MixedAttention(MixedAttentionConfig(hidden_dim=8, num_heads=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        specs = [TokenSpec(name="surface_anchors", size=4), TokenSpec(name="surface_queries", size=2)]
        patterns = [
            AttentionPattern(query_tokens=["surface_anchors", "surface_queries"], key_value_tokens=["surface_anchors"])
        ]
        return self.block(self.encoder(x), specs, patterns)[0]


def record_good() -> Path:
    torch.manual_seed(0)
    model = _Tiny().eval()
    with torch.no_grad(), capture_attention(model, positions={"surface_anchors": torch.rand(4, 3)}) as cap:
        model(torch.randn(1, 6, 8))
    return cap.save(GOOD)


def _parts() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = load_file(str(GOOD))
    with GOOD.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        metadata = json.loads(stream.read(length))["__metadata__"]
    return tensors, json.loads(metadata["manifest"])


def _write(name: str, tensors: dict[str, torch.Tensor], manifest: dict[str, Any], metadata: dict[str, str]) -> None:
    meta = {"format": "noether-attention-capture", "format_version": "1", "manifest": json.dumps(manifest)}
    meta.update(metadata)
    save_file(tensors, str(CORPUS / "bad" / name), metadata=meta)


def _variant(name: str, change: Callable[[dict[str, torch.Tensor], dict[str, Any]], dict[str, str] | None]) -> None:
    tensors, manifest = _parts()
    metadata = change(tensors, manifest) or {}
    _write(name, tensors, manifest, metadata)


def main() -> None:
    record_good()
    bad = CORPUS / "bad"
    data = GOOD.read_bytes()
    (bad / "capture_truncated.capture.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "capture_empty.capture.safetensors").write_bytes(b"")
    (bad / "capture_huge_header.capture.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    (bad / "capture_pickle.capture.safetensors").write_bytes(pickle.dumps({"q.weight": [1.0, 2.0]}, protocol=4))
    with zipfile.ZipFile(bad / "capture_torch_save.capture.safetensors", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"q.weight": [1.0]}, protocol=2))
    save_file({"q.weight": torch.zeros(2, 2)}, str(bad / "capture_plain_weights.capture.safetensors"))

    def unknown_version(tensors: dict, manifest: dict) -> dict[str, str]:
        manifest["format_version"] = 2
        return {"format_version": "2"}

    def missing_tensor(tensors: dict, manifest: dict) -> None:
        del tensors[manifest["calls"][1]["output"]]

    def extra_tensor(tensors: dict, manifest: dict) -> None:
        tensors["debug/activations"] = torch.zeros(3)

    def shape_mismatch(tensors: dict, manifest: dict) -> None:
        key = manifest["calls"][1]["output"]
        tensors[key] = tensors[key][:, :5].contiguous()

    def nan_input(tensors: dict, manifest: dict) -> None:
        key = manifest["calls"][0]["inputs"]["x"]
        tensors[key][0, 2, 3] = float("nan")

    def inf_parameter(tensors: dict, manifest: dict) -> None:
        key = manifest["modules"]["block"]["parameters"]["k.weight"]
        tensors[key][1, 1] = float("inf")

    def unknown_group(tensors: dict, manifest: dict) -> None:
        manifest["calls"][1]["attention_patterns"][0]["key_value_tokens"] = ["surface_anchor"]

    def manifest_not_json(tensors: dict, manifest: dict) -> dict[str, str]:
        return {"manifest": "{calls: [}"}

    def manifest_wrong_shape(tensors: dict, manifest: dict) -> None:
        manifest["calls"][0]["call_index"] = "first"

    for name, change in [
        ("capture_unknown_version", unknown_version),
        ("capture_missing_tensor", missing_tensor),
        ("capture_extra_tensor", extra_tensor),
        ("capture_shape_mismatch", shape_mismatch),
        ("capture_nan_input", nan_input),
        ("capture_inf_parameter", inf_parameter),
        ("capture_manifest_not_json", manifest_not_json),
        ("capture_manifest_wrong_type", manifest_wrong_shape),
    ]:
        _variant(f"{name}.capture.safetensors", change)
    # A layer whose structure is not a valid scenario: the file loads, the layer is listed as not explorable.
    _variant("../good/tiny_unknown_group.capture.safetensors", unknown_group)
    print(f"wrote {GOOD} and the bad captures in {bad}")


if __name__ == "__main__":
    main()
