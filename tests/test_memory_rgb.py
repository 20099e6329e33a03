"""RGB point-cloud memory (the baseline): same splat rules at pixel resolution, a fake VAE encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as Fnn

from mirage.camera import intrinsics_from_fov, invert_rigid, make_rigid, project_world_to_pixels
from mirage.errors import MemoryFileError, ModelError
from mirage.latent_space import LatentSpace
from mirage.memory import LatentMemory, MemoryConfig, RGBMemory, create_memory, load_memory
from mirage.memory.store import PointStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
S, TS = 8, 4
h, w = 6, 10
H, W = h * S, w * S
Z = 3.0
K = intrinsics_from_fov(50.0, W, H).float()


def fake_encode(video: torch.Tensor) -> torch.Tensor:
    """(F, 3, H, W) -> (T, 3, H/8, W/8): avg-pool by 8, the latent frame of each causal group (its last frame)."""
    F = video.shape[0]
    return Fnn.avg_pool2d(video, S)[list(range(0, F, TS))]


def _rgb_memory(seed=0):
    img = torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    mem = create_memory(
        "rgb", image=img, latents=torch.zeros(3, h, w), depth=torch.full((H, W), Z), K=K, c2w=torch.eye(4),
        space=LatentSpace(3, S, TS, "fake"), config=MemoryConfig(), encode_video=fake_encode,
    )
    return mem, img


def _c2w_shift_px(px: float) -> torch.Tensor:
    return make_rigid(torch.eye(3), torch.tensor([px * Z / float(K[0, 0]), 0.0, 0.0]))


def test_identity_read_renders_and_encodes_the_image():
    mem, img = _rgb_memory()
    assert isinstance(mem, RGBMemory) and mem.init_report.tokens == H * W
    r = mem.read(K[None].expand(5, 3, 3), torch.eye(4)[None].expand(5, 4, 4))
    assert r.rgb.shape == (5, 3, H, W) and r.pixel_holes.shape == (5, H, W)
    assert torch.equal(r.rgb[0], img) and not r.pixel_holes.any()
    assert r.latents.shape == (2, 3, h, w) and not r.holes.any()
    torch.testing.assert_close(r.latents[0], Fnn.avg_pool2d(img[None], S)[0])
    torch.testing.assert_close(r.depth, torch.full((2, h, w), Z))


def test_hole_pooling_majority_rule_and_write_back():
    mem, img = _rgb_memory()
    c2w = _c2w_shift_px(20)  # the image moves 20 px left: 20 hole columns = 2.5 latent columns
    w2c = invert_rigid(c2w)
    r = mem.read(K[None].expand(5, 3, 3), w2c[None].expand(5, 4, 4))
    assert int(r.pixel_holes[0].all(0).sum()) == 20
    assert torch.equal(r.rgb[0, :, :, : W - 20], img[:, :, 20:])
    # latent column w-3 has 4 of 8 pixel columns empty (not a majority) -> covered; w-2, w-1 -> holes
    assert r.holes[:, :, w - 2 :].all() and not r.holes[:, :, : w - 2].any()
    new = torch.where(r.pixel_holes[0][None], torch.full((3, H, W), 0.5), r.rgb[0])
    st = mem.write(frames=new[None].expand(5, 3, H, W), latents=torch.zeros(2, 3, h, w),
                   depth=torch.full((5, H, W), Z * 0.5), K=K[None].expand(5, 3, 3), c2w=c2w[None].expand(5, 4, 4),
                   region=r.pixel_holes)
    assert st.added == 20 * H  # frame 0 fills all; frames 1-4 (same pose) add nothing
    assert st.scales == pytest.approx((2.0,) * 2, rel=1e-5)  # written: pixel frames 0 and 4 (latent frames' poses)
    r2 = mem.read(K[None], w2c[None])
    assert not r2.pixel_holes.any()
    torch.testing.assert_close(r2.rgb[0, :, :, W - 20 :], torch.full((3, H, 20), 0.5))


def test_latent_region_expands_to_pixels():
    mem, _ = _rgb_memory()
    c2w = _c2w_shift_px(16)
    region = torch.zeros(2, h, w, dtype=torch.bool)
    region[1, :, w - 2 :] = True  # latent frame 1 = pixel frames 1..4
    st = mem.write(frames=torch.zeros(5, 3, H, W), latents=torch.zeros(2, 3, h, w), depth=torch.full((5, H, W), Z),
                   K=K[None].expand(5, 3, 3), c2w=c2w[None].expand(5, 4, 4), region=region)
    assert st.added == 16 * H


def test_bad_encoder_output_and_save_load(tmp_path):
    mem, _ = _rgb_memory()
    p = tmp_path / "rgb.safetensors"
    mem.save(p)
    back = load_memory(p, space=LatentSpace(3, S, TS, "fake"), encode_video=fake_encode)
    assert isinstance(back, RGBMemory)
    assert torch.equal(back.points.store.xyz, mem.points.store.xyz)
    assert torch.equal(back.points.store.features, mem.points.store.features)
    with pytest.raises(MemoryFileError, match="kind"):
        LatentMemory.load(p)
    with pytest.raises(MemoryFileError, match="latent_channels"):
        RGBMemory.load(p, encode_video=fake_encode, latent_channels=16)
    broken = RGBMemory.load(p, encode_video=lambda v: v[:, :, ::8, ::8][:1])
    with pytest.raises(ModelError, match="encode_video"):
        broken.read(K[None].expand(5, 3, 3), torch.eye(4)[None].expand(5, 4, 4))
    ply = tmp_path / "rgb.ply"
    mem.export_ply(ply)
    assert b"element vertex %d" % (H * W) in ply.read_bytes()[:300]


@pytest.mark.skipif(not (SHARED / "points" / "garden.npz").is_file(), reason="shared/points/garden.npz not available")
def test_garden_point_cloud_renders_into_its_real_camera():
    d = np.load(SHARED / "points" / "garden.npz")
    xyz = torch.from_numpy(d["means3d"]).float()
    col = torch.from_numpy(d["colors"]).float() / 127.5 - 1
    Hg, Wg = 416, 648  # the real 420 rows cropped at the bottom to a multiple of 8 (K unchanged)
    pts = LatentMemory(PointStore(xyz, col, torch.zeros(len(xyz), dtype=torch.long)), stride=1, temporal_stride=1,
                       image_size=(Hg, Wg), config=MemoryConfig(), voxel_size=0.01)
    mem = RGBMemory(pts, encode_video=lambda v: Fnn.avg_pool2d(v, 8), stride=8, temporal_stride=1, latent_channels=3)
    for i in range(3):
        Kg, w2c = torch.from_numpy(d["Ks"][i]).float(), torch.from_numpy(d["viewmats"][i]).float()
        r = mem.read(Kg[None], w2c[None])
        assert torch.isfinite(r.rgb).all() and torch.isfinite(r.latents).all() and torch.isfinite(r.depth).all()
        cov = float((~r.pixel_holes).float().mean())
        assert 0.2 < cov < 0.4, cov  # measured 0.26-0.29: sparse SfM points, no densification
        assert 0.08 < float((~r.holes).float().mean()) < cov
        # independent reference: nearest point per pixel (numpy, far-to-near assignment: the last write wins)
        uv, z = project_world_to_pixels(xyz, Kg, w2c)
        ui = torch.floor(uv + 0.5).long()
        ok = (z > 1e-3) & (ui[:, 0] >= 0) & (ui[:, 0] < Wg) & (ui[:, 1] >= 0) & (ui[:, 1] < Hg)
        order = torch.argsort(z[ok], descending=True)
        ref = np.full((Hg, Wg, 3), np.nan, dtype=np.float32)
        ref[ui[ok][order, 1].numpy(), ui[ok][order, 0].numpy()] = col[ok][order].numpy()
        both = ~np.isnan(ref[..., 0]) & ~r.pixel_holes[0].numpy()
        assert both.sum() > 0.15 * Hg * Wg
        got = r.rgb[0].permute(1, 2, 0).numpy()[both]
        corr = np.corrcoef(got.reshape(-1), ref[both].reshape(-1))[0, 1]
        assert corr > 0.8, corr
