"""Write-back: add what the views of a generated chunk newly reveal to a memory's store, asking for the depth of
only the views that add something.

Both memories write through :func:`integrate_views` (the latent memory on its token grid, the RGB memory on the
pixel grid of the :class:`~mirage.memory.latent.LatentMemory` it composes). The depth of the written frames comes
from a *depth source*: a tensor already computed, or a callable that runs the depth model on the frames it is given
(:data:`DepthSource`), which this module calls at most twice per write. See ``docs/memory.md``, section Write-back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from mirage._check import check_shape
from mirage.camera import check_poses, intrinsics_to_latent, invert_rigid
from mirage.errors import InputError
from mirage.memory.align import DepthFits, fit_depth_batch
from mirage.memory.splat import check_intrinsics, footprint_depth, grid_to_world, invalid_depth
from mirage.memory.store import PendingWrite
from mirage.memory.types import WriteStats

if TYPE_CHECKING:
    from mirage.memory.latent import LatentMemory

logger = logging.getLogger("mirage")

#: Raw depth on demand: ``depth_of(frames)`` gets a list of pixel-frame indices of the chunk (a subset of the
#: memory's ``write_frame_indices``, ascending) and returns their (n, H, W) raw depth-model output.
DepthSource = Callable[[list[int]], torch.Tensor]

#: The same, indexed by the views of one :func:`integrate_views` call: view indices in, (n, H, W) raw depth out.
ViewDepth = Callable[[list[int]], torch.Tensor]


def view_depth(depth: torch.Tensor | DepthSource, frames: Sequence[int], num_frames: int, size: tuple[int, int]) -> ViewDepth:
    """The depth of the written views of a chunk, from whatever ``write`` was given.

    Args:
        depth: (F, H, W) raw depth of every pixel frame, (T, H, W) of the written frames only, or a
            :data:`DepthSource` (called with pixel-frame indices).
        frames: the written views' pixel frames (``write_frame_indices(F)``, T of them).
        num_frames: F, the chunk's pixel frames. size: (H, W).
    Returns:
        a :data:`ViewDepth`: view indices (into ``frames``) -> (n, H, W) raw depth.
    """
    H, W = size
    frames = list(frames)
    T = len(frames)
    if callable(depth):
        def asked(views: list[int]) -> torch.Tensor:
            d = depth([frames[v] for v in views])
            if not isinstance(d, torch.Tensor):
                raise InputError(f"depth: the depth source returned {type(d).__name__}, expected a (n, H, W) tensor")
            check_shape(d, (len(views), H, W), "depth (returned by the depth source)")
            return d

        return asked
    if depth.ndim == 3 and depth.shape[0] == T and T != num_frames:
        check_shape(depth, (T, H, W), "depth")  # given for the written frames only
        sel = depth
    else:
        check_shape(depth, (num_frames, H, W), "depth")
        sel = depth[frames]
    return lambda views: sel[views]


def rows(x: torch.Tensor, index: list[int]) -> torch.Tensor:
    """``x[index]`` for a list of ints, without the index tensor a list index copies to the device (a copy from
    pageable host memory waits for the GPU, which would keep the write's work from queueing behind the depth model).
    Returns (len(index), ...)."""
    return torch.stack([x[i] for i in index])


def integrate_views(
    mem: LatentMemory,
    features_grid: torch.Tensor,
    depth: ViewDepth,
    K: torch.Tensor,
    c2w: torch.Tensor,
    region_grid: torch.Tensor,
) -> WriteStats:
    """Write B views of a chunk into ``mem.store`` (runs once per chunk; it waits for the GPU at three points, see below).

    1. **Order.** View 0 first when its region is not empty (it adds every cell of its region); then the *last* view
       b_L with a region (for a monotonic move it sees most of what the chunk revealed); then the views between, in
       order. Every view after the first written adds only the cells of its region that are *still holes* after the
       views written before it (a depth-only render of the store and the write's candidates so far, per view).
    2. **Depth on demand.** ``depth`` is asked for view 0 (if its region is not empty) and b_L in one call; then the
       views between are rendered in one batch after b_L was written and only those whose region still has a hole are
       asked for, in one more call. A view whose region is empty, or fully covered by then, never gets depth.
    3. **Alignment.** The raw depth of each asked view is pooled to the grid (footprint depth) and fitted to the
       store's depth as rendered *before* this write (:func:`~mirage.memory.align.fit_depth_batch`, the views of a
       depth call at once).
    4. Candidates go through voxel de-duplication (:class:`~mirage.memory.store.PendingWrite`, the same as
       :meth:`PointStore.merge` view after view: the first written keeps a voxel with ``VoxelWinner.EXISTING``), then
       the token budget is applied.

    The host waits for the GPU at three points: which views have a region (before the first depth call, with the
    camera checks), which views between still add something (before the second), and the end, where the fits,
    counts and kept rows are read back (a few reads, behind all the queued work). Everything else queues behind the
    depth model, so the write costs about its kernels' time (``docs/memory.md``, Write-back). The store changes
    only at the end, when nothing can fail any more.

    Args:
        mem: the memory whose store is written (its grid: ``mem.grid_size``, ``mem.stride``).
        features_grid: (B, C, h, w) features of the views on the grid.
        depth: view indices -> (n, H, W) raw depth (:func:`view_depth`).
        K: (B, 3, 3) pixel intrinsics; c2w: (B, 4, 4) camera-to-world, OpenCV.
        region_grid: (B, h, w) bool, where content is newly revealed.
    Returns:
        :class:`WriteStats`; ``depth_views`` names the views whose depth was asked, and the per-view ``scales``,
        ``shifts`` and ``residuals`` are theirs, in that order.
    """
    B = features_grid.shape[0]
    H, W = mem.image_size
    check_intrinsics(K, H, W, "K")
    check_poses(c2w.double().cpu(), "c2w")
    dev = mem.store.xyz.device
    c = mem.config
    C = mem.channels
    K_grid = intrinsics_to_latent(K.to(dev).double(), mem.stride).float()  # (B, 3, 3)
    c2w = c2w.to(dev).float()
    w2c = invert_rigid(c2w.double()).float()
    region_grid = region_grid.to(dev).bool()
    feats = features_grid.to(dev).permute(0, 2, 3, 1).reshape(B, -1, C)  # (B, h*w, C)
    has = region_grid.flatten(1).any(1).tolist()  # (B,) wait 1: which views have a region at all
    views = [b for b in range(B) if has[b]]
    pending = PendingWrite(mem.store, mem.voxel_size, c.voxel_winner)
    calls: list[tuple[list[int], DepthFits]] = []  # per depth call: its views and their fits
    rejected = torch.zeros((), dtype=torch.long, device=dev)

    def write_views(asked: list[int], raw: torch.Tensor, holes_now: torch.Tensor | None) -> None:
        """Fit and add ``asked`` views in order (no host sync); ``raw`` (n, H, W) their raw depth; ``holes_now``
        (1, h, w): the holes at the first of them, rendered since the last add (None: render it)."""
        nonlocal rejected
        grid = footprint_depth(raw.to(dev), mem.stride, c.footprint_depth)  # (n, h, w), NaN invalid
        j = [slot[b] for b in asked]
        fit = fit_depth_batch(grid, rows(ref.depth, j), ~rows(ref.holes, j), mode=c.align, min_valid=c.align_min_valid,
                              trim=c.align_trim)
        calls.append((asked, fit))
        aligned = fit.apply(grid)  # (n, h, w)
        bad = invalid_depth(aligned)
        xyz = grid_to_world(aligned, rows(K_grid, asked), rows(c2w, asked))  # (n, h*w, 3)
        for i, b in enumerate(asked):
            cand = region_grid[b]  # view 0, written first, adds its whole region
            if b > 0 and i == 0 and holes_now is not None:
                cand = cand & holes_now[0]
            elif b > 0:
                cand = cand & mem.render_grid(K_grid[b : b + 1], w2c[b : b + 1], features=False,
                                              pending=pending).holes[0]
            rejected = rejected + (cand & bad[i]).sum()
            pending.add(xyz[i], feats[b], (cand & ~bad[i]).reshape(-1))

    if views:
        last = views[-1]
        first = [0, last] if has[0] and last != 0 else [last]
        raw = depth(first)  # the depth model runs first: the renders and fits below queue behind it
        ref = mem.render_grid(rows(K_grid, views), rows(w2c, views), features=False)  # the store before this write
        slot = {b: i for i, b in enumerate(views)}  # view -> its index in ref
        write_views(first, raw, None if first[0] == 0 else ref.holes[slot[last]][None])
        between = [b for b in views if b not in first]
        if between:
            now = mem.render_grid(rows(K_grid, between), rows(w2c, between), features=False,
                                  pending=pending).holes  # (n, h, w) after b_L
            left = (rows(region_grid, between) & now).flatten(1).sum(1).tolist()  # wait 2: who still adds something
            still = dict(zip(between, left, strict=True))  # view -> region cells still holes
            asked = [b for b in between if still[b]]
            logger.debug("memory write: view %d written first; region cells still holes per view: %s", last, still)
            if asked:
                write_views(asked, depth(asked), now[between.index(asked[0])][None])
    # the end: the fits, counts and kept rows read back (behind all the queued work); then the store changes
    fit_of = {b: f for asked, fit in calls for b, f in zip(asked, fit.to_host(c.align_min_valid), strict=True)}
    n_rejected = int(rejected)
    mem.writes += 1
    counts = pending.commit(mem.writes)
    over = mem.store.trim(c.max_tokens)
    order = sorted(fit_of)
    warnings = [f"view {b}: {fit_of[b].warning}" for b in order if fit_of[b].warning]
    if n_rejected:
        warnings.append(f"{n_rejected} revealed cell(s) had no valid depth and were not stored")
    warning = "; ".join(warnings) if warnings else None
    if warning:
        logger.warning("memory write: %s", warning)
    return WriteStats(
        added=counts.added, merged=counts.merged, dropped=over + n_rejected, tokens=len(mem.store),
        bytes=mem.store.nbytes, rejected=n_rejected, replaced=counts.replaced,
        scales=tuple(fit_of[b].scale for b in order), shifts=tuple(fit_of[b].shift for b in order),
        residuals=tuple(fit_of[b].residual for b in order), warning=warning, depth_views=tuple(order),
    )
