"""The write-back's primitives as they were before writes were held on the device (commit 06df83d), kept as the
references the new code is tested against: a per-view merge with ``torch.unique``/``torch.isin`` and compaction,
and the per-frame depth fit on compacted pixels with ``torch.linalg.lstsq`` (its argsort made stable, so ties are
deterministic, and its warnings shortened)."""

from __future__ import annotations

import torch

from mirage.memory import AlignMode, DepthFit, VoxelWinner
from mirage.memory.store import MergeCounts, PointStore, voxel_keys


def merge_as_before(store: PointStore, xyz: torch.Tensor, features: torch.Tensor, birth: int, voxel_size: float,
                    winner: VoxelWinner) -> MergeCounts:
    """PointStore.merge before the pending write: one view, de-duplicated and appended at once (mutates ``store``)."""
    M = xyz.shape[0]
    if M == 0:
        return MergeCounts(0, 0, 0)
    dev = store.xyz.device
    k_new = voxel_keys(xyz, voxel_size)[0]
    uniq, inv = torch.unique(k_new, return_inverse=True)
    first = torch.full((uniq.shape[0],), M, dtype=torch.long, device=dev).scatter_reduce(
        0, inv, torch.arange(M, device=dev), "amin"
    )
    first = first.sort().values  # (U,) kept candidates in their original order
    n_intra = M - int(first.shape[0])
    k_kept = k_new[first]
    k_old = voxel_keys(store.xyz, voxel_size)[0] if len(store) else torch.empty(0, dtype=torch.long, device=dev)
    occupied = torch.isin(k_kept, k_old)  # (U,)
    n_occ = int(occupied.sum())
    replaced = 0
    if winner == VoxelWinner.EXISTING:
        take = first[~occupied]
    else:
        gone = torch.isin(k_old, k_kept)
        replaced = int(gone.sum())
        store._keep(~gone)
        take = first
    store.xyz = torch.cat([store.xyz, xyz[take].float()])
    store.features = torch.cat([store.features, features[take].to(store.features.dtype)])
    store.birth = torch.cat([store.birth, torch.full((take.shape[0],), birth, dtype=torch.long, device=dev)])
    if store.slot_row is not None:
        store.slot_row = torch.cat([store.slot_row, torch.full((take.shape[0],), -1, dtype=torch.long, device=dev)])
    added = int(take.shape[0]) - (n_occ if winner == VoxelWinner.NEWEST else 0)
    return MergeCounts(added=added, merged=n_intra + n_occ, replaced=replaced)


def fit_as_before(depth_raw: torch.Tensor, depth_ref: torch.Tensor, valid: torch.Tensor, *,
                  mode: AlignMode = AlignMode.SCALE, min_valid: int = 32, trim: float = 0.2) -> DepthFit:
    """fit_depth before the batched fit: one frame (H, W), compacted to its valid pixels."""
    raw = depth_raw.double().reshape(-1)
    ref = depth_ref.double().reshape(-1)
    ok = valid.reshape(-1) & torch.isfinite(raw) & torch.isfinite(ref) & (raw > 0) & (ref > 0)
    n = int(ok.sum())
    if mode == AlignMode.NONE:
        return DepthFit(1.0, 0.0, _residual(raw, ref, ok, 1.0, 0.0), n, n, None)
    if n < max(min_valid, 1):
        return DepthFit(1.0, 0.0, _residual(raw, ref, ok, 1.0, 0.0), n, 0, "too few")
    r = torch.log(ref[ok]) - torch.log(raw[ok])
    med = r.median()
    keep = max(1, int(round(n * (1.0 - trim))))
    order = (r - med).abs().argsort(stable=True)[:keep]
    log_s = r[order].mean()
    scale, shift = float(torch.exp(log_s)), 0.0
    warning = None
    if mode == AlignMode.SCALE_SHIFT:
        x = raw[ok][order]
        y = ref[ok][order]
        A = torch.stack([x, torch.ones_like(x)], dim=-1)
        sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
        s2, t2 = float(sol[0]), float(sol[1])
        if s2 > 0 and keep >= 2:
            scale, shift = s2, t2
        else:
            warning = "rejected"
    return DepthFit(scale, shift, _residual(raw, ref, ok, scale, shift), n, keep, warning)


def _residual(raw, ref, ok, scale, shift) -> float:
    if not bool(ok.any()):
        return float("nan")
    rel = ((raw[ok] * scale + shift) - ref[ok]).abs() / ref[ok]
    return float(rel.median())
