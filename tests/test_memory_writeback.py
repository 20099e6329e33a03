"""Write-back order and depth on demand (docs/memory.md, Write-back): the depth model runs only on the views of a
chunk that add something, and the memory ends up covering what the every-view scheme covered."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from mirage.camera import intrinsics_from_fov, invert_rigid, make_rigid
from mirage.latent_space import LatentSpace
from mirage.memory import MemoryConfig, MemoryKind, create_memory
from mirage.pipeline import dilate

C, S, TS = 4, 8, 4
h, w = 12, 20
H, W = h * S, w * S
F = 33  # one Wan chunk: latent frames at pixel frames 0, 4, ..., 32
IDX = list(range(0, F, TS))
K = intrinsics_from_fov(60.0, W, H).float()
# the inside of a box (OpenCV axes, y down): back wall z = 3, side walls x = +-1.6, floor/ceiling y = +-0.8
ROOM = [((0.0, 0.0, 1.0), 3.0), ((1.0, 0.0, 0.0), 1.6), ((-1.0, 0.0, 0.0), 1.6), ((0.0, 1.0, 0.0), 0.8),
        ((0.0, -1.0, 0.0), 0.8)]
WALL = [((0.0, 0.0, 1.0), 3.0)]  # one fronto-parallel wall


def true_depth(c2w: torch.Tensor, planes=ROOM) -> torch.Tensor:
    """(H, W) z-depth of the nearest plane in front of the camera ``c2w`` (4, 4) (ray casting, pixel centres)."""
    v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(K).T  # (H, W, 3), camera z = 1
    d, o = rays @ c2w[:3, :3].T, c2w[:3, 3]  # world directions, camera centre
    best = torch.full((H, W), float("inf"))
    for n, off in planes:
        n = torch.tensor(n)
        den = d @ n
        t = (off - o @ n) / den  # the ray parameter is the z-depth (camera-frame z of the ray is 1)
        best = torch.where((t > 0) & (den > 1e-9), torch.minimum(best, t), best)
    return best


def orbit(deg: float, centre: float = 2.0) -> torch.Tensor:
    """c2w (4, 4) of a camera turned by ``deg`` about the vertical axis through (0, 0, centre), looking at it."""
    t = math.radians(deg)
    R = torch.tensor([[math.cos(t), 0.0, math.sin(t)], [0.0, 1.0, 0.0], [-math.sin(t), 0.0, math.cos(t)]])
    c = torch.tensor([0.0, 0.0, centre])
    return make_rigid(R, c - R @ torch.tensor([0.0, 0.0, centre]))


def truck(x: float) -> torch.Tensor:
    return make_rigid(torch.eye(3), torch.tensor([x, 0.0, 0.0]))


def memory(planes=ROOM, kind=MemoryKind.LATENT):
    lat = torch.randn(C, h, w, generator=torch.Generator().manual_seed(0))
    return create_memory(kind, image=torch.zeros(3, H, W), latents=lat, depth=true_depth(torch.eye(4), planes), K=K,
                         c2w=torch.eye(4), space=LatentSpace(C, S, TS, "test/vae"), config=MemoryConfig(),
                         encode_video=lambda v: torch.zeros(len(range(0, v.shape[0], TS)) if v.shape[0] > 1 else 1,
                                                            C, h, w))


class Spy:
    """A depth source that counts what it is asked for (the pipeline passes the depth model this way)."""

    def __init__(self, c2w: torch.Tensor, planes=ROOM):
        self.c2w, self.planes, self.calls = c2w, planes, []

    def __call__(self, frames: list[int]) -> torch.Tensor:
        self.calls.append(list(frames))
        return torch.stack([true_depth(self.c2w[i], self.planes) for i in frames])

    @property
    def frames(self) -> int:
        return sum(len(c) for c in self.calls)


def write_chunk(mem, c2w: torch.Tensor, depth, seed: int = 1):
    """What the pipeline's write-back does for one chunk: region = the read's holes (frame 0 known), dilated."""
    w2c = invert_rigid(c2w)
    Kf = K[None].expand(F, 3, 3)
    holes = mem.read(Kf, w2c).holes.clone()
    holes[0] = False
    lat = torch.randn(len(IDX), C, h, w, generator=torch.Generator().manual_seed(seed))
    return mem.write(torch.zeros(F, 3, H, W), lat, depth, Kf, c2w, dilate(holes, 1))


def write_chunk_every_view(mem, c2w: torch.Tensor, seed: int = 1) -> int:
    """The scheme before depth on demand: every latent frame but the known one gets depth; views in order, each adds
    the cells of its region that are still holes. Returns the number of depth estimates."""
    w2c = invert_rigid(c2w)
    holes = mem.read(K[None].expand(F, 3, 3), w2c).holes.clone()
    holes[0] = False
    region = dilate(holes, 1)
    lat = torch.randn(len(IDX), C, h, w, generator=torch.Generator().manual_seed(seed))
    for t in range(1, len(IDX)):
        i = IDX[t]
        still = region[t] & mem.read(K[None], w2c[i][None]).holes[0]
        mem.integrate_views(lat[t : t + 1], true_depth(c2w[i])[None], K[None], c2w[i][None], still[None])
    return len(IDX) - 1


def poses(fn, a: float, b: float, n: int = F) -> torch.Tensor:
    return torch.stack([fn(x) for x in torch.linspace(a, b, n).tolist()])  # (n, 4, 4)


@pytest.mark.parametrize("kind", [MemoryKind.LATENT, MemoryKind.RGB])
def test_static_camera_asks_no_depth(kind):
    mem = memory(kind=kind)
    before = len(mem.points.store if kind is MemoryKind.RGB else mem.store)
    c2w = torch.eye(4).expand(F, 4, 4).clone()
    spy = Spy(c2w)
    st = write_chunk(mem, c2w, spy)
    assert spy.calls == [] and st.depth_views == () and st.scales == ()
    assert st.added == 0 and st.tokens == before


def test_only_the_last_view_reveals_one_depth_call_of_one_frame():
    mem = memory(WALL)
    c2w = torch.eye(4).repeat(F, 1, 1)
    c2w[-4:] = truck(0.4)  # the last latent frame (pixel frames 29..32) moves right: only it sees new wall
    spy = Spy(c2w, WALL)
    st = write_chunk(mem, c2w, spy)
    assert spy.calls == [[32]] and st.depth_views == (8,)
    assert st.added > 0 and st.scales == pytest.approx((1.0,), rel=1e-4)


def test_a_truck_move_is_covered_by_its_last_view():
    """Every view of a sideways move reveals a strip at the edge; the last view's strip holds them all, so its depth
    is the only one needed (the every-view scheme estimated 8)."""
    mem = memory(WALL)
    c2w = poses(truck, 0.0, 0.5)
    spy = Spy(c2w, WALL)
    st = write_chunk(mem, c2w, spy)
    assert spy.calls == [[32]] and st.added > 0
    holes = mem.read(K[None].expand(F, 3, 3), invert_rigid(c2w)).holes
    assert int(holes.sum()) == 0  # the whole chunk is covered now


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_orbit_covers_what_every_view_covered_with_fewer_depth_estimates(sign):
    """Two chunks of an orbit through a room: depth on demand asks for 7 frames instead of 16, and a later read
    (the two chunks and 6 degrees beyond) has the same holes but for at most 0.5% of its cells."""
    new, old = memory(), memory()
    asked = estimated_old = 0
    for a, b in ((0.0, 10.0), (10.0, 20.0)):
        c2w = poses(orbit, sign * a, sign * b)
        spy = Spy(c2w)
        write_chunk(new, c2w, spy)
        assert spy.calls[0] == [32] and len(spy.calls) <= 2  # the last view first, then one batched call
        asked += spy.frames
        estimated_old += write_chunk_every_view(old, c2w)
    assert estimated_old == 16 and asked <= 7
    c2w = poses(orbit, 0.0, sign * 26.0, 65)
    Kf, w2c = K[None].expand(65, 3, 3), invert_rigid(c2w)
    holes_new, holes_old = new.read(Kf, w2c).holes, old.read(Kf, w2c).holes  # (17, h, w)
    cells = holes_new.numel()
    assert int(holes_old.sum()) > 0  # the read does look past what was written
    assert abs(int(holes_new.sum()) - int(holes_old.sum())) <= 0.005 * cells
    assert int((holes_new ^ holes_old).sum()) <= 0.005 * cells
    assert abs(len(new.store) - len(old.store)) <= 0.01 * len(old.store)


def test_last_view_wins_a_voxel_both_would_write():
    """The last view is written first, so with the default VoxelWinner.EXISTING its token keeps a voxel an earlier
    view would also fill (docs/memory.md)."""
    mem = memory(WALL)
    c2w = torch.eye(4).repeat(F, 1, 1)
    c2w[1:] = truck(0.4)  # every latent frame after the first at the same new pose: the same cells, same voxels
    spy = Spy(c2w, WALL)
    holes = mem.read(K[None].expand(F, 3, 3), invert_rigid(c2w)).holes.clone()
    holes[0] = False
    lat = torch.stack([torch.full((C, h, w), float(t)) for t in range(len(IDX))])  # view t's features are all t
    st = mem.write(torch.zeros(F, 3, H, W), lat, spy, K[None].expand(F, 3, 3), c2w, holes)
    assert spy.calls == [[32]] and st.depth_views == (8,)
    new_tokens = mem.store.features[mem.store.birth == 1]
    assert len(new_tokens) == st.added > 0 and bool((new_tokens == 8.0).all())


def _integrate_view_by_view(mem, feats_grid, depth, K_px, c2w, region):
    """integrate_views as docs/memory.md states it, on the primitives as they were before (tests/_store_reference.py):
    each view fitted alone, its still-hole cells found by rendering the store as it stands, merged before the next
    view."""
    from _store_reference import fit_as_before, merge_as_before

    from mirage.camera import intrinsics_to_latent
    from mirage.memory.splat import footprint_depth, grid_to_world, invalid_depth

    c = mem.config
    K_grid = intrinsics_to_latent(K_px.double(), mem.stride).float()
    w2c = invert_rigid(c2w.double()).float()
    feats = feats_grid.permute(0, 2, 3, 1).reshape(feats_grid.shape[0], -1, mem.channels)
    mem.writes += 1
    views = [b for b in range(len(c2w)) if bool(region[b].any())]
    ref = mem.render_grid(K_grid[views], w2c[views], features=False)
    added = merged = 0
    asked_all = []

    def write(asked, holes_first):
        nonlocal added, merged
        raw = footprint_depth(depth(asked), mem.stride, c.footprint_depth)
        for i, b in enumerate(asked):
            j = views.index(b)
            fit = fit_as_before(raw[i], ref.depth[j], ~ref.holes[j], mode=c.align, min_valid=c.align_min_valid,
                                trim=c.align_trim)
            aligned = fit.apply(raw[i])
            cand = region[b]
            if b > 0 and i == 0 and holes_first is not None:
                cand = cand & holes_first
            elif b > 0:
                cand = cand & mem.render_grid(K_grid[b : b + 1], w2c[b : b + 1], features=False).holes[0]
            m = (cand & ~invalid_depth(aligned)).reshape(-1)
            xyz = grid_to_world(aligned[None], K_grid[b : b + 1], c2w[b : b + 1])[0]
            counts = merge_as_before(mem.store, xyz[m], feats[b][m], mem.writes, mem.voxel_size, c.voxel_winner)
            added, merged = added + counts.added, merged + counts.merged
        asked_all.extend(asked)

    last = views[-1]
    first = [0, last] if 0 in views and last != 0 else [last]
    write(first, None if first[0] == 0 else ref.holes[views.index(last)])
    between = [b for b in views if b not in first]
    now = mem.render_grid(K_grid[between], w2c[between], features=False).holes
    asked = [b for k, b in enumerate(between) if bool((region[b] & now[k]).any())]
    if asked:
        write(asked, now[between.index(asked[0])])
    mem.store.trim(c.max_tokens)
    return added, merged, sorted(asked_all)


@pytest.mark.parametrize("winner", ["existing", "newest"])
@pytest.mark.parametrize("kind", ["latent grid", "pixel grid", "two phases"])
def test_the_deferred_write_leaves_the_store_view_by_view_merges_leave(kind, winner):
    """integrate_views holds a write's candidates on the device until the end (PendingWrite, no host sync per view);
    the store it leaves is the one the view-by-view scheme leaves: same points, same order, same counts."""
    import copy

    from mirage.memory import VoxelWinner

    mem = memory()
    if kind == "pixel grid":  # the RGB memory writes through a stride-1 LatentMemory of its pixels
        mem = memory(kind=MemoryKind.RGB).points
    mem.config = MemoryConfig(voxel_winner=VoxelWinner(winner), phases=2 if kind == "two phases" else 1)
    s = mem.stride
    # out and back: the views between see what the last view, back near the start, does not
    c2w_all = torch.stack([orbit(14.0 * math.sin(math.pi * t)) for t in torch.linspace(0.0, 0.9, F).tolist()])
    c2w, Kv = c2w_all[IDX], K[None].expand(len(IDX), 3, 3)
    g = torch.Generator().manual_seed(4)
    region = dilate(mem.read(K[None].expand(F, 3, 3), invert_rigid(c2w_all)).holes, 1) if s > 1 else None
    if region is None:  # the pixel grid: a read of the latent-grid memory's holes, upsampled
        holes = memory().read(K[None].expand(F, 3, 3), invert_rigid(c2w_all)).holes
        region = dilate(holes, 1).repeat_interleave(S, 1).repeat_interleave(S, 2)
    region[0] = False

    def depth(views):  # raw depth at a scale of its own per view, a few invalid pixels
        d = torch.stack([true_depth(c2w[v]) * (1.0 + 0.1 * v) for v in views])
        d[:, :2, :5] = float("nan")
        return d

    gh, gw = mem.grid_size
    feats = torch.randn(len(IDX), mem.channels, gh, gw, generator=g).to(mem.store.features.dtype)
    ref = copy.deepcopy(mem)
    st = mem.integrate_views(feats, depth, Kv, c2w, region)
    added, merged, asked = _integrate_view_by_view(ref, feats, depth, Kv, c2w, region)
    assert st.added > 20 and len(asked) >= 3 and list(st.depth_views) == asked
    assert (st.added, st.merged) == (added, merged)
    assert len(mem.store) == len(ref.store) and mem.writes == ref.writes
    assert torch.equal(mem.store.birth, ref.store.birth) and torch.equal(mem.store.features, ref.store.features)
    torch.testing.assert_close(mem.store.xyz, ref.store.xyz, rtol=1e-6, atol=1e-6)


def test_a_write_reads_back_to_the_host_the_same_few_times_however_many_views_it_writes():
    """The per-view fits, renders and de-duplication stay on the device (PendingWrite): the write reads back to the
    host at its start, once between its two depth calls and at its end, whether it writes one view or eight."""
    from _host_reads import HostReads

    def one_write(c2w_all):
        mem = memory()
        c2w = c2w_all[IDX]
        region = dilate(mem.read(K[None].expand(F, 3, 3), invert_rigid(c2w_all)).holes, 1)
        region[0] = False
        lat = torch.randn(len(IDX), C, h, w, generator=torch.Generator().manual_seed(1))
        with HostReads() as reads:
            st = mem.integrate_views(lat, lambda v: torch.stack([true_depth(c2w[i]) for i in v]),
                                     K[None].expand(len(IDX), 3, 3), c2w, region)
        return st, reads

    st1, one = one_write(poses(truck, 0.0, 0.1))  # a short truck move: few views add something
    out_and_back = torch.stack([orbit(14.0 * math.sin(math.pi * t)) for t in torch.linspace(0.0, 0.9, F).tolist()])
    st8, eight = one_write(out_and_back)
    assert len(st1.depth_views) <= 2 and len(st8.depth_views) == 8
    assert eight.count <= 20 and eight.count - one.count <= 6, (one.sites, eight.sites)


# ------------------------------------------------------------------------------------------------ through the pipeline

REPO = Path(__file__).resolve().parents[1]
ROOM_IMAGE, ROOM_DEPTH = REPO / "examples" / "room" / "image.png", REPO / "examples" / "room" / "depth.png"


@pytest.fixture(scope="module")
def pipe():
    from mirage.hub import build_tiny
    from mirage.pipeline import Pipeline, PipelineConfig

    build_tiny()
    return Pipeline(PipelineConfig(preset="tiny", device="cpu"))


def test_pipeline_asks_the_depth_model_only_for_frames_that_add_something(pipe, monkeypatch):
    """A World step of 4 frames has latent frames at pixel frames 0 and 4: the known frame 0 never gets depth (the
    every-view scheme estimated both); a static step none. The depth calls are timed as write_depth, and only
    there (memory_write pauses while they run)."""
    from mirage.config import RenderOptions
    from mirage.sampling import SamplingProfile

    est = pipe.depth_model()
    real, seen = est.estimate_batch, []

    def slow_counting(frames, **kw):
        seen.append(int(frames.shape[0]))
        time.sleep(0.3)
        return real(frames, **kw)

    monkeypatch.setattr(est, "estimate_batch", slow_counting)
    world = pipe.world(ROOM_IMAGE, RenderOptions(size=(64, 48), chunk_frames=5, steps=1, profile=SamplingProfile.FAST,
                                                 fov=60.0), depth_file=ROOM_DEPTH)
    world.step(torch.eye(4).repeat(4, 1, 1))  # static: the read has no holes, nothing to write
    assert seen == [] and world.chunks[-1].added == 0
    move = torch.eye(4).repeat(4, 1, 1)
    move[:, 0, 3] = torch.linspace(-0.25, -1.0, 4)  # the camera moves right: the last frame reveals the right edge
    world.step(move)
    assert seen == [1] and world.chunks[-1].added > 0
    t = world.timer.times_ms()
    assert t["write_depth"] >= 300 and t["memory_write"] < 300, t
    json.dumps(t)
