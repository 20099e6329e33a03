"""The memory file format: a point store as one safetensors file with a JSON header, written atomically; and the
coloured-point PLY export. See ``docs/memory.md``, section File format."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage.errors import MemoryFileError
from mirage.io import atomic_path
from mirage.memory.store import PointStore

MEMORY_FILE_FORMAT = "mirage-memory"
MEMORY_FILE_VERSION = 2  # v2 adds the optional steady-slot features (``slot_features``, ``slot_row``); v1 files load
MEMORY_FILE_VERSIONS = (1, 2)  # versions this code reads


def save_store(path: str | Path, store: PointStore, header: dict[str, Any]) -> None:
    """Write ``store`` as safetensors (``xyz``, ``features``, ``birth``) with ``header`` as JSON in the metadata
    key ``"mirage"``, atomically (temp file + rename)."""
    from safetensors.torch import save

    # a store without slot features is exactly a v1 file: readers of v1 keep reading it
    version = MEMORY_FILE_VERSION if store.slot_features is not None else 1
    meta = {"format": MEMORY_FILE_FORMAT, "version": version, **header}
    tensors = {
        "xyz": store.xyz.detach().contiguous().cpu(),
        "features": store.features.detach().contiguous().cpu(),
        "birth": store.birth.detach().contiguous().cpu(),
    }
    if store.slot_features is not None and store.slot_row is not None:
        tensors["slot_features"] = store.slot_features.detach().contiguous().cpu()
        tensors["slot_row"] = store.slot_row.detach().contiguous().cpu()
    data = save(tensors, metadata={"mirage": json.dumps(meta)})
    # written and synced by Python, so a full disk surfaces as an OSError (one line from atomic_path, exit code 1)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_store(path: str | Path, device: torch.device | str = "cpu") -> tuple[PointStore, dict[str, Any]]:
    """Read a file written by :func:`save_store`. Any unreadable/corrupt/foreign file -> :class:`MemoryFileError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MemoryFileError(f"memory file {path}: not found; pass a file written by memory.save()")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise MemoryFileError(f"memory file {path}: cannot be read ({type(e).__name__}); the file is corrupt") from None
    try:
        header = json.loads(meta["mirage"])
    except (KeyError, json.JSONDecodeError):
        raise MemoryFileError(f"memory file {path}: no mirage header; it was not written by memory.save()") from None
    if header.get("format") != MEMORY_FILE_FORMAT or header.get("version") not in MEMORY_FILE_VERSIONS:
        raise MemoryFileError(
            f"memory file {path}: format {header.get('format')!r} v{header.get('version')} is not "
            f"{MEMORY_FILE_FORMAT!r} v{MEMORY_FILE_VERSION}; re-create the memory with this version"
        )
    missing = {"xyz", "features", "birth"} - set(tensors)
    if missing:
        raise MemoryFileError(f"memory file {path}: tensor(s) {', '.join(sorted(missing))} missing; the file is corrupt")
    xyz, feats, birth = tensors["xyz"], tensors["features"], tensors["birth"]
    n = xyz.shape[0]
    if xyz.shape != (n, 3) or feats.ndim != 2 or feats.shape[0] != n or birth.shape != (n,):
        raise MemoryFileError(f"memory file {path}: tensor shapes disagree; the file is corrupt")
    for name, t in (("xyz", xyz), ("features", feats)):
        if not t.is_floating_point():
            raise MemoryFileError(f"memory file {path}: tensor {name} is {t.dtype}, not floating point; the file is corrupt")
        bad = int((~torch.isfinite(t)).sum())
        if bad:  # NaN/inf features would render black frames without an error
            raise MemoryFileError(f"memory file {path}: tensor {name} holds {bad} NaN/inf values; the file is corrupt, "
                                  "re-create the memory with --save-memory")
    slot_feats, slot_row = tensors.get("slot_features"), tensors.get("slot_row")
    if (slot_feats is None) != (slot_row is None):
        raise MemoryFileError(f"memory file {path}: slot_features and slot_row go together, one is missing; the file is corrupt")
    if slot_feats is not None and slot_row is not None:
        m = slot_feats.shape[0]
        if (slot_feats.ndim != 3 or slot_feats.shape[2] != feats.shape[1] or slot_row.shape != (n,)
                or slot_row.dtype != torch.int64 or not slot_feats.is_floating_point()
                or (n and (int(slot_row.min()) < -1 or int(slot_row.max()) >= m))):
            raise MemoryFileError(f"memory file {path}: slot tensor shapes disagree; the file is corrupt")
        bad = int((~torch.isfinite(slot_feats)).sum())
        if bad:
            raise MemoryFileError(f"memory file {path}: tensor slot_features holds {bad} NaN/inf values; the file is "
                                  "corrupt, re-create the memory with --save-memory")
        slot_feats, slot_row = slot_feats.to(device), slot_row.to(device)
    return PointStore(xyz.to(device), feats.to(device), birth.to(device), slot_feats, slot_row), header


def check_header(header: dict[str, Any], path: str | Path, expect: dict[str, Any]) -> None:
    """Raise :class:`MemoryFileError` when a file's latent space differs from what the caller expects
    (keys whose expected value is None are not checked)."""
    for key, want in expect.items():
        if want is None:
            continue
        got = header.get(key)
        if got != want:
            raise MemoryFileError(
                f"memory file {path}: {key} is {got!r}, this run needs {want!r}; the memory was made for another "
                "latent space: re-create it with this model"
            )


def write_ply(path: str | Path, xyz: torch.Tensor, rgb_uint8: torch.Tensor) -> None:
    """Binary little-endian .ply of coloured points, atomically. ``xyz``: (N, 3) float; ``rgb_uint8``: (N, 3) uint8."""
    n = int(xyz.shape[0])
    arr = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    p = xyz.detach().float().cpu().numpy()
    c = rgb_uint8.detach().cpu().numpy()
    arr["x"], arr["y"], arr["z"] = p[:, 0], p[:, 1], p[:, 2]
    arr["r"], arr["g"], arr["b"] = c[:, 0], c[:, 1], c[:, 2]
    head = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(head.encode("ascii") + arr.tobytes())


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """Colours in [-1, 1] (any shape) -> uint8 in [0, 255]."""
    return ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
