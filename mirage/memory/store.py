"""The cloud of a memory and how a write lands in it: voxel keys, the bounded point store (voxel de-duplication,
token budget), and a pending write that holds one write's candidates on the device until it is committed.

A write adds the candidates of several views in order, and each view must see what the views before it added (the
write-back renders the store with them to find what is still a hole: :mod:`mirage.memory.writeback`).
:class:`PendingWrite` keeps those candidates, with their de-duplication masks, as fixed-shape device tensors, so a
whole write runs without a host synchronisation until :meth:`PendingWrite.commit` appends them.
Committing the views one by one with :meth:`PointStore.merge` gives the same store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mirage.errors import InputError
from mirage.memory.splat import VoxelWinner

logger = logging.getLogger("mirage")

_KEY_BITS = 21
_KEY_HALF = 1 << (_KEY_BITS - 1)
_FAR_WARNING = "memory: some points lie more than %d voxels from the origin; they share edge voxels"


def voxel_keys(xyz_world: torch.Tensor, voxel_size: float,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One int64 key per point: its voxel (21 bits per axis, +-1M voxels around the origin; farther points clamp
    onto the outermost voxel). No host sync.

    Args:
        xyz_world: (N, 3) float. voxel_size: scene units. mask: optional (N,) bool; False points (their position may
            be NaN) get key -1.
    Returns:
        keys (N,) int64, >= 1 where unmasked; far, a 0-d bool tensor: some point was clamped onto an edge voxel (the
        caller warns, :data:`_FAR_WARNING`, once it reads it back).
    """
    q = torch.floor(xyz_world.double() / voxel_size)
    if mask is not None:
        q = torch.where(mask[:, None], q, 0.0)
    far = (q.abs() >= _KEY_HALF - 1).any()
    q = q.clamp(-_KEY_HALF + 1, _KEY_HALF - 1).long() + _KEY_HALF  # (N, 3) in [1, 2^21)
    keys = (q[:, 0] << (2 * _KEY_BITS)) | (q[:, 1] << _KEY_BITS) | q[:, 2]
    return (keys, far) if mask is None else (torch.where(mask, keys, -1), far)


def _isin_sorted(x: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which of ``x`` occur in the ascending ``sorted_keys`` (no host sync, unlike ``torch.isin``'s
    unique-based paths)."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, x).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == x


@dataclass
class MergeCounts:
    added: int  # candidates stored in a new voxel
    merged: int  # candidates that met an occupied voxel (or another candidate's) and were folded into it
    replaced: int  # stored tokens removed because a newer one took their voxel (VoxelWinner.NEWEST)


@dataclass
class PointStore:
    """The cloud of a memory: positions, features and the write that made each point.

    Attributes:
        xyz: (N, 3) float32 world positions.
        features: (N, C) model dtype (latent tokens) or float (RGB colours in [-1, 1]): the feature every read uses,
            except where a point has steady-slot features.
        birth: (N,) int64, 0 for the init view, k for the k-th write (the token budget drops the smallest first).
        slot_features: None, or (M, S, C) in the features' dtype: for M points, their features in the latent slots
            1..S of a chunk (a video VAE's slot 0 encodes one frame alone, slot t >= 1 a group of frames with causal
            context: the latent memory's init tokens keep both kinds, see ``docs/memory.md``).
        slot_row: None, or (N,) int64: each point's row of ``slot_features``, -1 for points with one feature only.
    """

    xyz: torch.Tensor
    features: torch.Tensor
    birth: torch.Tensor
    slot_features: torch.Tensor | None = None
    slot_row: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.slot_features is None) != (self.slot_row is None):
            raise InputError("PointStore: slot_features and slot_row go together; pass both or neither")

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def slots(self) -> int:
        """S, the steady latent slots the points with slot features keep (0: none)."""
        return 0 if self.slot_features is None else int(self.slot_features.shape[1])

    @property
    def nbytes(self) -> int:
        parts = (self.xyz, self.features, self.birth, self.slot_features, self.slot_row)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def features_at(self, slots: torch.Tensor) -> torch.Tensor:
        """The features B reads see: for latent slot 0 ``features``; for slot s >= 1 a point's slot feature
        ``min(s, S)`` where it has slot features (slots past S read slot S), else ``features``. No host sync.

        Args:
            slots: (B,) int64, the latent slot (index in its chunk) of each read.
        Returns:
            (N, C) ``features`` when no point has slot features, else (B, N, C).
        """
        if self.slot_features is None or self.slot_row is None:
            return self.features
        S = self.slots
        has = self.slot_row >= 0  # (N,)
        k = slots.to(self.xyz.device).long().clamp(max=S) - 1  # (B,) column of slot_features, -1 = slot 0
        picked = self.slot_features[self.slot_row.clamp(min=0)[None, :], k.clamp(min=0)[:, None]]  # (B, N, C)
        use = has[None, :, None] & (k >= 0)[:, None, None]  # (B, N, 1)
        return torch.where(use, picked, self.features[None])

    def merge(self, xyz: torch.Tensor, features: torch.Tensor, birth: int, voxel_size: float,
              winner: VoxelWinner) -> MergeCounts:
        """Add candidate points with voxel de-duplication (one new point per voxel): a :class:`PendingWrite` of
        one view, committed.

        Among candidates sharing a voxel the first (earliest frame, then row-major) is kept. A candidate whose voxel
        already holds stored points is merged: with ``EXISTING`` it is discarded, with ``NEWEST`` it replaces them.
        Stored points are never de-duplicated among themselves (the init view keeps every token).

        Args:
            xyz: (M, 3) float32; features: (M, C) (cast to the store's dtype); birth: the write index.
        """
        pending = PendingWrite(self, voxel_size, winner)
        pending.add(xyz, features, torch.ones(xyz.shape[0], dtype=torch.bool, device=xyz.device))
        return pending.commit(birth)

    def append(self, xyz: torch.Tensor, features: torch.Tensor, birth: int) -> None:
        """Append points (no de-duplication): xyz (M, 3), features (M, C) cast to the store's dtype, all born at
        write ``birth``, with one feature each (no slot features)."""
        dev = self.xyz.device
        M = xyz.shape[0]
        self.xyz = torch.cat([self.xyz, xyz.float()])
        self.features = torch.cat([self.features, features.to(self.features.dtype)])
        self.birth = torch.cat([self.birth, torch.full((M,), birth, dtype=torch.long, device=dev)])
        if self.slot_row is not None:  # written points have one feature: the kind of the slot they were made in
            self.slot_row = torch.cat([self.slot_row, torch.full((M,), -1, dtype=torch.long, device=dev)])

    def trim(self, max_tokens: int) -> int:
        """Drop the oldest points (smallest ``birth``, then lowest index) beyond ``max_tokens``. Returns the count."""
        extra = len(self) - max_tokens
        if extra <= 0:
            return 0
        order = torch.argsort(self.birth, stable=True)
        keep = torch.ones(len(self), dtype=torch.bool, device=self.xyz.device)
        keep[order[:extra]] = False
        self._keep(keep)
        return extra

    def _keep(self, mask: torch.Tensor) -> None:
        self.xyz, self.features, self.birth = self.xyz[mask], self.features[mask], self.birth[mask]
        if self.slot_row is not None and self.slot_features is not None:
            rows = self.slot_row[mask]
            used = rows >= 0
            live = rows[used]  # each row belongs to one point: drop the rows of dropped points (write time: may sync)
            if live.numel() < self.slot_features.shape[0]:
                order = torch.argsort(live)
                self.slot_features = self.slot_features[live[order]]
                rows = rows.clone()
                remap = torch.empty_like(live)
                remap[order] = torch.arange(live.numel(), device=live.device)
                rows[used] = remap
            self.slot_row = rows

    def bounds(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        if len(self) == 0:
            nan = (float("nan"),) * 3
            return nan, nan
        lo, hi = self.xyz.amin(0).tolist(), self.xyz.amax(0).tolist()
        return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


class PendingWrite:
    """The candidates of one write, held on the device until :meth:`commit`: de-duplicated as
    :meth:`PointStore.merge` would de-duplicate them view after view, and drawable with the store
    (:meth:`points`) so a later view of the write sees what the earlier ones added. No host sync before ``commit``.

    Args:
        store: the store written (unchanged until ``commit``).
        voxel_size: the de-duplication voxel, scene units. winner: see :class:`~mirage.memory.splat.VoxelWinner`.
    """

    def __init__(self, store: PointStore, voxel_size: float, winner: VoxelWinner):
        self.store, self.voxel_size, self.winner = store, float(voxel_size), VoxelWinner(winner)
        dev = store.xyz.device
        self._old_keys, self._far = voxel_keys(store.xyz, self.voxel_size)  # (N,), 0-d
        self._alive = torch.ones(len(store), dtype=torch.bool, device=dev)  # stored points not replaced (NEWEST)
        self._xyz: list[torch.Tensor] = []  # per add: (M, 3) float32
        self._features: list[torch.Tensor] = []  # per add: (M, C)
        self._keys: list[torch.Tensor] = []  # per add: (M,) int64, -1 where masked out
        self._keep: list[torch.Tensor] = []  # per add: (M,) bool, the candidates that will be stored
        zero = torch.zeros((), dtype=torch.long, device=dev)
        self._added = self._merged = self._replaced = zero
        self._committed = False

    def _live_keys(self) -> torch.Tensor:
        """Ascending keys of the voxels that hold points now (the store's live points and the kept candidates);
        -1 entries stand for the rest."""
        parts = [torch.where(self._alive, self._old_keys, -1)]
        parts += [torch.where(keep, keys, -1) for keys, keep in zip(self._keys, self._keep, strict=True)]
        return torch.cat(parts).sort().values

    def add(self, xyz_world: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> None:
        """Add one view's candidates: xyz_world (M, 3) float (stored, and keyed, as float32), features (M, C), mask
        (M,) bool (False: not a candidate; its position may be NaN). No host sync."""
        if self._committed:
            raise RuntimeError("PendingWrite: already committed; start a new PendingWrite for the next write")
        xyz_world = xyz_world.float()
        M = xyz_world.shape[0]
        keys, far = voxel_keys(xyz_world, self.voxel_size, mask)
        self._far = self._far | far
        # the first candidate of each voxel, in row order (a stable sort keeps equal keys in their order)
        dev = keys.device
        sk, order = torch.where(mask, keys, -2 - torch.arange(M, device=dev)).sort(stable=True)
        starts = torch.ones(M, dtype=torch.bool, device=dev)
        starts[1:] = sk[1:] != sk[:-1]
        take = mask & torch.empty_like(starts).scatter_(0, order, starts)  # (M,)
        occupied = take & _isin_sorted(keys, self._live_keys())  # their voxel holds points already
        if self.winner == VoxelWinner.EXISTING:
            keep = take & ~occupied
        else:  # NEWEST: a taken candidate replaces every point of its voxel, stored or pending
            taken = torch.where(take, keys, -1).sort().values
            gone = self._alive & _isin_sorted(self._old_keys, taken)
            self._replaced = self._replaced + gone.sum()
            self._alive = self._alive & ~gone
            for i, (k, kp) in enumerate(zip(self._keys, self._keep, strict=True)):
                gone = kp & _isin_sorted(k, taken)
                self._replaced = self._replaced + gone.sum()
                self._keep[i] = kp & ~gone
            keep = take
        self._added = self._added + take.sum() - occupied.sum()
        self._merged = self._merged + (mask.sum() - take.sum()) + occupied.sum()
        self._xyz.append(xyz_world)
        self._features.append(features)
        self._keys.append(keys)
        self._keep.append(keep)

    def points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the store will hold after :meth:`commit`, to draw: ``(xyz (N + P, 3), valid (N + P,) bool)``, the
        N stored points then the P candidates added; ``valid`` is False for points that will not be there."""
        return torch.cat([self.store.xyz, *self._xyz]), torch.cat([self._alive, *self._keep])

    def commit(self, birth: int) -> MergeCounts:
        """Apply the write to the store: replaced points dropped, kept candidates appended in the order they were
        added, born at write ``birth`` (host read-backs: the counts, then the kept rows). Returns the counts of every
        ``add``. A PendingWrite commits once."""
        if self._committed:
            raise RuntimeError("PendingWrite: already committed; start a new PendingWrite for the next write")
        self._committed = True
        added, merged, replaced, replaced_stored, far = torch.stack(
            [self._added, self._merged, self._replaced, (~self._alive).sum(), self._far.long()]).tolist()
        if far:
            logger.warning(_FAR_WARNING, _KEY_HALF)
        if replaced_stored:
            self.store._keep(self._alive)
        if self._keep:
            keep = torch.cat(self._keep)
            self.store.append(torch.cat(self._xyz)[keep], torch.cat(self._features)[keep], birth)
        self._xyz, self._features, self._keys, self._keep = [], [], [], []
        return MergeCounts(added=added, merged=merged, replaced=replaced)
