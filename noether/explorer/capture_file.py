"""Read a capture file (a recording of a model's attention calls) safely: header first, then checked tensors.

A capture is a plain safetensors file whose ``__metadata__`` holds the format name, its version and a JSON
manifest that names every tensor. Nothing is unpickled; a file that is not exactly what its manifest says is
refused with one problem naming the entry (call id, module or tensor key) and what to do.
"""

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

from noether.explorer.capture_manifest import CallEntry, Manifest, fail, tree_keys
from noether.explorer.capture_manifest import CaptureError as CaptureError
from noether.explorer.capture_names import is_capture_name as is_capture_name
from noether.explorer.capture_shapes import check_call_shapes, check_positions

FORMAT = "noether-attention-capture"
FORMAT_VERSION = 1
MAX_CAPTURE_BYTES = 2 * 2**30
"""Largest capture file read (a 100k-token model at hidden 192 stores well under this per layer)."""
MAX_HEADER_BYTES = 100 * 2**20
"""Largest safetensors header (the library's own limit): the manifest and the tensor table."""
ACTIVATION_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


# --------------------------------------------------------------------------------------------------------------------
# The loaded capture
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Capture:
    """A checked capture: its manifest and every tensor it names (on cpu, complex ones restored)."""

    name: str
    manifest: Manifest
    tensors: dict[str, torch.Tensor]
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def activations_dtype(self) -> torch.dtype:
        return ACTIVATION_DTYPES[self.manifest.activations_dtype]

    @property
    def call_ids(self) -> list[str]:
        return [call.id for call in self.manifest.calls]

    def call(self, call_id: str) -> CallEntry:
        for call in self.manifest.calls:
            if call.id == call_id:
                return call
        raise KeyError(call_id)

    def tensor(self, key: str | None) -> torch.Tensor | None:
        return None if key is None else self.tensors[key]

    def module_state_dict(self, module: str) -> dict[str, torch.Tensor]:
        return {name: self.tensors[key] for name, key in self.manifest.modules[module].parameters.items()}

    def positions(self) -> dict[str, torch.Tensor]:
        return {group: self.tensors[key] for group, key in self.manifest.positions.items()}


def load_capture(path: str | Path, max_bytes: int = MAX_CAPTURE_BYTES) -> Capture:
    """Open a capture file; raises CaptureError (one problem naming the entry) for anything unusable."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise fail("(file)", "does not exist or is not a file.", "Check the path.")
    size = path.stat().st_size
    _check_size(name, size, max_bytes)
    with path.open("rb") as stream:
        head = stream.read(8)
        header_bytes = stream.read(_header_length(name, head, size))
    header = _parse_header(name, head, header_bytes, size)
    manifest = _manifest(name, header)
    _check_table(name, manifest, header)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as exc:  # a corrupt file makes the library raise many kinds of errors
        raise fail("(file)", f"could not be read as safetensors ({_short(exc)}).") from None
    return _finish(name, manifest, tensors, size)


def load_capture_bytes(data: bytes, name: str = "capture", max_bytes: int = MAX_CAPTURE_BYTES) -> Capture:
    """Open a capture held in memory (an upload); same checks as :func:`load_capture`."""
    _check_size(name, len(data), max_bytes)
    head = data[:8]
    length = _header_length(name, head, len(data))
    header = _parse_header(name, head, data[8 : 8 + length], len(data))
    manifest = _manifest(name, header)
    _check_table(name, manifest, header)
    try:
        tensors = load_safetensors(data)
    except Exception as exc:
        raise fail("(file)", f"could not be read as safetensors ({_short(exc)}).") from None
    return _finish(name, manifest, tensors, len(data))


# --------------------------------------------------------------------------------------------------------------------
# Header: read and checked before any tensor is touched
# --------------------------------------------------------------------------------------------------------------------


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise fail(
            "(file)",
            f"is {size / 2**20:,.1f} MB; captures are read up to {max_bytes / 2**20:,.0f} MB.",
            "Record fewer layers (layers=[...]) or store activations as float16 (activations_dtype).",
        )


def _sniff(head: bytes) -> str:
    """What a file that is not safetensors most likely is, for the message."""
    if head[:2] == b"PK":
        return " It looks like a torch.save zip archive (a pickle), which is never loaded here."
    if head[:1] == b"\x80":
        return " It looks like a Python pickle, which is never loaded here."
    if head[:1] in (b"{", b"[", b"#") or head[:4] in (b"atte", b"toke"):
        return " It looks like a text document (a scenario?); scenario files end in .yaml or .json."
    return ""


def _header_length(name: str, head: bytes, size: int) -> int:
    if len(head) < 8:
        raise fail("(file)", f"is truncated: {size} bytes, shorter than a safetensors header.{_sniff(head)}")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES or length > size - 8:
        if length <= MAX_HEADER_BYTES:
            raise fail("(file)", f"is truncated: its header says {length:,} bytes but the file has {size - 8:,} left.")
        sniffed = _sniff(head)
        raise fail(
            "(file)",
            f"is not a capture.{sniffed}"
            if sniffed
            else f"is not a capture: its first 8 bytes declare a {length:,}-byte header (limit {MAX_HEADER_BYTES:,}).",
            "Open a .capture.safetensors file written by capture_attention(...).save(path).",
        )
    return length


def _parse_header(name: str, head: bytes, header_bytes: bytes, size: int) -> dict[str, Any]:
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise fail(
            "(file)",
            f"is not a capture: its header is not safetensors JSON.{_sniff(head)}",
            "Open a .capture.safetensors file written by capture_attention(...).save(path).",
        ) from None
    if not isinstance(header, dict):
        raise fail("(file)", "is not a capture: its safetensors header is not a JSON object.")
    data_bytes = size - 8 - len(header_bytes)
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise fail(f"tensor '{key}'", "has no valid data_offsets in the safetensors header.")
        end = max(end, offsets[1])
    if end > data_bytes:
        raise fail("(file)", f"is truncated: its tensors need {end:,} bytes of data but the file holds {data_bytes:,}.")
    return header


def _manifest(name: str, header: dict[str, Any]) -> Manifest:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise fail(
            "(file)",
            f"is a safetensors file but not an attention capture (no '__metadata__.format: {FORMAT}').",
            "Trained weights go to the --weights option; captures come from capture_attention(...).save(path).",
        )
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise fail(
            "format_version",
            f"is {version!r}; this explorer reads capture format version {FORMAT_VERSION}.",
            "Update the explorer, or record the capture with a matching version.",
        )
    try:
        data = json.loads(str(metadata.get("manifest", "")))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise fail("manifest", f"is not valid JSON ({_short(exc)}).") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = "manifest" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        got = f" (got {err['input']!r:.80})" if err["type"] not in ("missing",) and "input" in err else ""
        raise fail(f"{where}", f"{err['msg']}{got}{more}.") from None
    return manifest


def _named_tensors(manifest: Manifest) -> Iterator[tuple[str, str]]:
    """(where, tensor key) for every tensor the manifest names."""
    for path, module in manifest.modules.items():
        for param, key in module.parameters.items():
            yield f"module '{path}' parameter '{param}'", key
    for call in manifest.calls:
        for arg, key in call.inputs.items():
            if key is not None:
                yield f"call '{call.id}' input '{arg}'", key
        yield from tree_keys(call.kv_cache, f"call '{call.id}' kv_cache")
        yield from tree_keys(call.new_kv_cache, f"call '{call.id}' new_kv_cache")
        if call.output is not None:
            yield f"call '{call.id}' output", call.output
    for group, key in manifest.positions.items():
        yield f"positions '{group}'", key


def _check_table(name: str, manifest: Manifest, header: dict[str, Any]) -> None:
    """Manifest and tensor table agree: every named tensor present, nothing else stored, ids consistent."""
    stored = {key for key in header if key != "__metadata__"}
    named: set[str] = set()
    for where, key in _named_tensors(manifest):
        if key not in stored:
            raise fail(f"{where}", f"names tensor '{key}', which the file does not hold.")
        named.add(key)
    extra = sorted(stored - named)
    if extra:
        raise fail(
            f"tensor '{extra[0]}'",
            f"is stored but the manifest names it nowhere ({len(extra)} such tensor{'s' * (len(extra) > 1)}).",
        )
    for key in manifest.complex_tensors:
        if key not in named:
            raise fail("manifest.complex_tensors", f"lists '{key}', which the manifest names nowhere.")
    seen: set[str] = set()
    for index, call in enumerate(manifest.calls):
        where = f"call '{call.id}'"
        if call.id in seen:
            raise fail(where, f"appears twice in manifest.calls (again at index {index}).")
        seen.add(call.id)
        if call.module not in manifest.modules:
            raise fail(where, f"belongs to module '{call.module}', which manifest.modules does not list.")
        if call.id != f"{call.module}#{call.call_index}":
            raise fail(where, f"should be '{call.module}#{call.call_index}' (module path # call index).")
    for key, entry in header.items():
        if key == "__metadata__" or not isinstance(entry, dict):
            continue
        if entry.get("dtype") not in _SAFETENSORS_DTYPES:
            raise fail(f"tensor '{key}'", f"has dtype {entry.get('dtype')!r}, not one a capture stores.")


# --------------------------------------------------------------------------------------------------------------------
# Tensors: finiteness, complex restoration, shapes against the manifest
# --------------------------------------------------------------------------------------------------------------------


def _finish(name: str, manifest: Manifest, raw: dict[str, torch.Tensor], size: int) -> Capture:
    where_of = {key: where for where, key in _named_tensors(manifest)}
    tensors: dict[str, torch.Tensor] = {}
    complex_keys = set(manifest.complex_tensors)
    for key, tensor in raw.items():
        where = where_of.get(key, f"tensor {key!r}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise fail(
                where, f"(tensor '{key}') holds {bad:,} NaN or infinite values.", "Record a finite forward pass."
            )
        if key in complex_keys:
            if tensor.dtype not in (torch.float32, torch.float64) or tensor.ndim < 1 or tensor.shape[-1] != 2:
                raise fail(where, f"is marked complex but has shape {tuple(tensor.shape)} and dtype {tensor.dtype}.")
            tensor = torch.view_as_complex(tensor.contiguous())
        tensors[key] = tensor
    capture = Capture(name=name, manifest=manifest, tensors=tensors, size_bytes=size)
    for call in manifest.calls:
        check_call_shapes(capture, call)
    check_positions(capture)
    return capture


def tolerance(dtype: torch.dtype, scale: float) -> tuple[float, str]:
    """Agreement expected of a recomputed layer whose activations were stored in ``dtype``, and its description."""
    if dtype == torch.float32:
        return 1e-5, "1e-5 (float32 capture)"
    eps = torch.finfo(dtype).eps
    tol = 16 * eps * max(1.0, scale)
    name = str(dtype).removeprefix("torch.")
    return tol, f"{tol:.1e} ({name} capture: 16 x {name} epsilon x output scale {max(1.0, scale):.3g})"
