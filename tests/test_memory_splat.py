"""Analytic tests of the shared splat / z-buffer (mirage.memory.splat) through the latent memory."""

from __future__ import annotations

import pytest
import torch

from mirage.camera import intrinsics_from_fov, intrinsics_to_latent, make_rigid
from mirage.errors import InputError
from mirage.latent_space import LatentSpace
from mirage.memory import (
    LatentMemory,
    MemoryConfig,
    SplatMode,
    create_memory,
    latent_frame_indices,
    splat_points,
)

C, h, w, S = 4, 8, 12, 8
Z = 2.0


def _plane_memory(seed: int = 0, config: MemoryConfig | None = None, depth_value: float = Z):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(C, h, w, generator=g)
    K = intrinsics_from_fov(60.0, w * S, h * S).float()
    mem = create_memory(
        "latent", image=torch.zeros(3, h * S, w * S), latents=lat, depth=torch.full((h * S, w * S), depth_value),
        K=K, c2w=torch.eye(4), space=LatentSpace(C, S, 4), config=config or MemoryConfig(),
    )
    return mem, lat, K


def _shifted_w2c(shift_cells: float, K: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """w2c of a camera moved right so a plane at depth Z moves ``shift_cells`` latent cells to the left."""
    fx_lat = float(intrinsics_to_latent(K, S)[0, 0])
    b = shift_cells * Z / fx_lat
    w2c = make_rigid(torch.eye(3), torch.tensor([-b, 0.0, 0.0]))  # camera centre at +b
    return w2c[None].expand(frames, 4, 4)


def test_latent_frame_indices():
    assert latent_frame_indices(81, 4) == list(range(0, 81, 4))
    assert len(latent_frame_indices(81, 4)) == 21
    assert latent_frame_indices(5, 1) == [0, 1, 2, 3, 4]
    assert latent_frame_indices(1, 4) == [0]
    with pytest.raises(InputError, match=r"6 pixel frames do not form whole latent frames .*pass 4k\+1 frames \(e.g. 5 or 9\)"):
        latent_frame_indices(6, 4)


def test_identity_pose_reproduces_latents_exactly():
    mem, lat, K = _plane_memory()
    r = mem.read(K[None].expand(5, 3, 3), torch.eye(4)[None].expand(5, 4, 4))
    assert r.latents.shape == (2, C, h, w) and r.holes.shape == (2, h, w) and r.depth.shape == (2, h, w)
    assert not r.holes.any()
    assert torch.equal(r.latents[0], lat) and torch.equal(r.latents[1], lat)
    assert torch.equal(r.depth, torch.full((2, h, w), Z))


@pytest.mark.parametrize("mode", [SplatMode.BILINEAR, SplatMode.NEAREST])
@pytest.mark.parametrize("shift", [1, 3])
def test_integer_shift_moves_by_fx_b_over_z(shift, mode):
    mem, lat, K = _plane_memory(config=MemoryConfig(splat=mode))
    r = mem.read(K[None], _shifted_w2c(shift, K))
    assert torch.equal(r.latents[0, :, :, : w - shift], lat[:, :, shift:])
    # holes exactly in the `shift` right-most columns
    assert r.holes[0, :, w - shift :].all() and not r.holes[0, :, : w - shift].any()
    assert int(r.holes.sum()) == shift * h
    assert torch.equal(r.latents[0, :, :, w - shift :], torch.zeros(C, h, shift))


def test_half_cell_shift_is_average_of_neighbours():
    mem, lat, K = _plane_memory()
    r = mem.read(K[None], _shifted_w2c(0.5, K))
    avg = 0.5 * (lat[:, :, :-1] + lat[:, :, 1:])
    torch.testing.assert_close(r.latents[0, :, :, : w - 1], avg, rtol=0, atol=1e-5)
    # the last column gets half a token: covered (0.5 >= min_coverage) and equal to that token
    torch.testing.assert_close(r.latents[0, :, :, w - 1], lat[:, :, w - 1], rtol=0, atol=1e-5)
    assert not r.holes.any()


@pytest.mark.parametrize(("shift", "hole_cols"), [(2.5, 2), (2.8, 3), (2.2, 2)])
def test_fractional_shift_hole_columns(shift, hole_cols):
    mem, _, K = _plane_memory()
    r = mem.read(K[None], _shifted_w2c(shift, K))
    cols = r.holes[0].all(dim=0)
    assert int(cols.sum()) == hole_cols
    assert cols[w - hole_cols :].all()
    assert int(r.holes.sum()) == hole_cols * h


def _occluder_scene():
    """Background plane at z=4 (one point per cell) and a 3x3 occluder at z=2 in front of cells x 4..6, y 2..4."""
    K = torch.tensor([[10.0, 0, 5.5], [0, 10.0, 3.5], [0, 0, 1]])
    v, u = torch.meshgrid(torch.arange(8.0), torch.arange(12.0), indexing="ij")
    uv = torch.stack([u, v], -1).reshape(-1, 2)
    bg = torch.cat([(uv - K[:2, 2]) / 10.0 * 4.0, torch.full((96, 1), 4.0)], 1)
    fv, fu = torch.meshgrid(torch.arange(2.0, 5.0), torch.arange(4.0, 7.0), indexing="ij")
    fuv = torch.stack([fu, fv], -1).reshape(-1, 2)
    fg = torch.cat([(fuv - K[:2, 2]) / 10.0 * 2.0, torch.full((9, 1), 2.0)], 1)
    xyz = torch.cat([bg, fg])
    feats = torch.cat([torch.zeros(96, 2), torch.ones(9, 2)])  # background 0, occluder 1
    return xyz, feats, K


@pytest.mark.parametrize("mode", [SplatMode.BILINEAR, SplatMode.NEAREST])
def test_near_occluder_wins_regardless_of_order(mode):
    xyz, feats, K = _occluder_scene()
    # two cameras: identity and a sub-cell sideways move (fractional positions exercise the soft test)
    w2c = torch.stack([torch.eye(4), make_rigid(torch.eye(3), torch.tensor([0.03, 0.01, 0.0]))])
    Ks = K[None].expand(2, 3, 3)
    ref = splat_points(xyz, feats, Ks, w2c, 8, 12, mode=mode)
    # identity camera: occluder cells show the occluder at depth 2, the rest the background at 4
    occ = torch.zeros(8, 12, dtype=torch.bool)
    occ[2:5, 4:7] = True
    assert torch.equal(ref.depth[0][occ], torch.full((9,), 2.0))
    assert torch.equal(ref.depth[0][~occ], torch.full((87,), 4.0))
    assert torch.equal(ref.features[0, 0][occ], torch.ones(9))
    assert torch.equal(ref.features[0, 0][~occ], torch.zeros(87))
    assert (ref.depth[1][~ref.holes[1]] <= 4.0).all() and (ref.depth[1] == 2.0).sum() >= 4
    for seed in range(5):
        perm = torch.randperm(xyz.shape[0], generator=torch.Generator().manual_seed(seed))
        out = splat_points(xyz[perm], feats[perm], Ks, w2c, 8, 12, mode=mode)
        assert torch.equal(out.depth, ref.depth), seed  # the hard z-winner is bitwise order independent
        assert torch.equal(out.holes, ref.holes), seed
        torch.testing.assert_close(out.features, ref.features, rtol=0, atol=1e-6)


def test_points_behind_camera_and_nonfinite_pose_are_holes():
    xyz, feats, K = _occluder_scene()
    flip = make_rigid(torch.diag(torch.tensor([1.0, -1.0, -1.0])), torch.zeros(3))  # looks backwards
    bad = torch.full((4, 4), float("nan"))
    out = splat_points(xyz, feats, K[None].expand(2, 3, 3), torch.stack([flip, bad]), 8, 12)
    assert out.holes.all()
    assert torch.equal(out.features, torch.zeros(2, 2, 8, 12))
    assert torch.equal(out.depth, torch.zeros(2, 8, 12))


def test_read_checks_shapes():
    mem, _, K = _plane_memory()
    assert isinstance(mem, LatentMemory)
    with pytest.raises(InputError, match="w2c"):
        mem.read(K[None], torch.eye(4)[None].expand(2, 4, 4))
    with pytest.raises(InputError, match="frames"):
        mem.read(K[None].expand(2, 3, 3), torch.eye(4)[None].expand(2, 4, 4))
