"""Latent memory: write-back, de-duplication, budget, depth alignment, files and bad input."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from mirage.camera import intrinsics_from_fov, intrinsics_to_latent, invert_rigid, make_rigid
from mirage.errors import InputError, MemoryFileError
from mirage.latent_space import LatentSpace
from mirage.memory import (
    AlignMode,
    FootprintDepth,
    LatentMemory,
    MemoryConfig,
    VoxelWinner,
    create_memory,
    fit_depth,
    load_memory,
)

C, h, w, S, TS = 4, 8, 12, 8, 4
H, W = h * S, w * S
Z = 2.0
K = intrinsics_from_fov(60.0, W, H).float()


def _memory(config: MemoryConfig | None = None, depth: torch.Tensor | None = None, dtype=torch.float32, seed=0):
    lat = torch.randn(C, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)
    mem = create_memory(
        "latent", image=torch.zeros(3, H, W), latents=lat, depth=torch.full((H, W), Z) if depth is None else depth,
        K=K, c2w=torch.eye(4), space=LatentSpace(C, S, TS, "test/vae"), config=config or MemoryConfig(),
    )
    return mem, lat


def _c2w_shift(cells: float) -> torch.Tensor:
    b = cells * Z / float(intrinsics_to_latent(K, S)[0, 0])
    return make_rigid(torch.eye(3), torch.tensor([b, 0.0, 0.0]))


def _write_view(mem, c2w, new_lat, raw_depth, region, frames=5):
    F = frames
    T = (F - 1) // TS + 1
    return mem.write(
        frames=torch.zeros(F, 3, H, W), latents=new_lat[None].expand(T, C, h, w).clone(),
        depth=raw_depth.expand(F, H, W).clone(), K=K[None].expand(F, 3, 3), c2w=c2w[None].expand(F, 4, 4),
        region=region,
    )


def test_write_fills_holes_with_aligned_depth_and_does_not_duplicate():
    mem, lat = _memory()
    c2w = _c2w_shift(3)
    w2c = invert_rigid(c2w)
    r = mem.read(K[None].expand(5, 3, 3), w2c[None].expand(5, 4, 4))
    assert int(r.holes[0].sum()) == 3 * h
    new = torch.where(r.holes[0][None], torch.full((C, h, w), 7.0), r.latents[0])  # "generated" latents
    raw = torch.full((1, H, W), Z / 2.5)  # the depth model's units differ from the memory's by 2.5x
    st = _write_view(mem, c2w, new, raw, r.holes)
    assert st.added == 3 * h  # latent frame 0 fills the holes; frame 1 (same pose) finds none left
    assert st.merged == 0 and st.dropped == 0 and st.rejected == 0
    assert st.tokens == h * w + 3 * h
    assert st.scales == pytest.approx((2.5, 2.5), rel=1e-5) and max(st.residuals) < 1e-5
    assert st.warning is None
    r2 = mem.read(K[None], w2c[None])
    assert not r2.holes.any()
    torch.testing.assert_close(r2.latents[0, :, :, w - 3 :], torch.full((C, h, 3), 7.0))
    torch.testing.assert_close(r2.depth[0], torch.full((h, w), Z), rtol=1e-5, atol=0)
    # writing the same view again (whole frame as region) adds nothing: voxel de-duplication
    st2 = _write_view(mem, c2w, new, raw, torch.ones(2, h, w, dtype=torch.bool))
    assert st2.added <= 1 and st2.merged >= h * w - 1
    assert st2.tokens == st.tokens + st2.added


def test_region_as_pixel_mask_is_pooled_with_any():
    mem, _ = _memory()
    c2w = _c2w_shift(3)
    region = torch.zeros(5, H, W, dtype=torch.bool)
    region[:, 0, W - 1] = True  # one pixel -> the top-right latent cell
    st = _write_view(mem, c2w, torch.zeros(C, h, w), torch.full((1, H, W), Z), region)
    assert st.added == 1


def test_newest_voxel_winner_replaces():
    mem, lat = _memory(MemoryConfig(voxel_winner=VoxelWinner.NEWEST))
    new = torch.full((C, h, w), 3.0)
    st = _write_view(mem, torch.eye(4), new, torch.full((1, H, W), Z), torch.ones(2, h, w, dtype=torch.bool))
    assert st.replaced == h * w and st.added == 0 and st.tokens == h * w
    r = mem.read(K[None], torch.eye(4)[None])
    torch.testing.assert_close(r.latents[0], new)


def test_token_budget_drops_oldest():
    mem, _ = _memory(MemoryConfig(max_tokens=110))
    c2w = _c2w_shift(3)
    r = mem.read(K[None], invert_rigid(c2w)[None])
    st = _write_view(mem, c2w, torch.ones(C, h, w), torch.full((1, H, W), Z), r.holes.expand(2, h, w))
    assert st.tokens == 110 and st.added == 24 and st.dropped == 96 + 24 - 110
    assert len(mem.store) == 110
    assert int((mem.store.birth == 0).sum()) == 110 - 24  # the init tokens went first
    assert int((mem.store.birth == 1).sum()) == 24


def test_alignment_fallback_is_visible():
    mem, _ = _memory(MemoryConfig(align_min_valid=1000))
    region = torch.zeros(2, h, w, dtype=torch.bool)
    region[1] = True  # only the last view has a region: only its depth is asked for and fitted
    st = _write_view(mem, torch.eye(4), torch.zeros(C, h, w), torch.full((1, H, W), 1.0), region)
    assert st.depth_views == (1,) and st.scales == (1.0,) and st.added == 0  # the identity view reveals nothing
    assert st.warning is not None and "kept scale 1" in st.warning


def test_fit_depth_robust_scale_and_shift():
    g = torch.Generator().manual_seed(1)
    ref = 1.0 + 4.0 * torch.rand(32, 32, generator=g)
    raw = ref / 3.0
    raw_out = raw.clone()
    raw_out[:3] = 50.0  # ~9% wild outliers
    valid = torch.ones(32, 32, dtype=torch.bool)
    fit = fit_depth(raw_out, ref, valid, mode=AlignMode.SCALE, trim=0.2)
    assert fit.scale == pytest.approx(3.0, rel=1e-6) and fit.warning is None
    assert fit.inliers == round(1024 * 0.8) and fit.valid == 1024
    fit2 = fit_depth(raw * 2.0 + 0.1, ref * 1.0 + 0.0, valid, mode=AlignMode.SCALE_SHIFT)
    # ref = s * (2 raw + 0.1) + t with raw = ref / 3 -> s = 1.5, t = -0.15
    assert fit2.scale == pytest.approx(1.5, rel=1e-5) and fit2.shift == pytest.approx(-0.15, abs=1e-5)
    assert fit2.residual < 1e-6
    few = torch.zeros(32, 32, dtype=torch.bool)
    few[0, :5] = True
    fit3 = fit_depth(raw, ref, few, min_valid=32)
    assert (fit3.scale, fit3.shift, fit3.valid) == (1.0, 0.0, 5) and "only 5 valid" in fit3.warning
    nan = raw.clone()
    nan[:16] = float("nan")
    assert fit_depth(nan, ref, valid).valid == 512


@pytest.mark.parametrize("mode", [AlignMode.SCALE, AlignMode.SCALE_SHIFT])
def test_batched_fits_match_the_fit_of_each_frame(mode):
    from _store_reference import fit_as_before

    from mirage.memory.align import fit_depth_batch

    g = torch.Generator().manual_seed(2)
    B = 5
    ref = 1.0 + 4.0 * torch.rand(B, 24, 32, generator=g)
    scale = torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0])
    raw = ref / scale[:, None, None] * (1 + 0.05 * torch.randn(B, 24, 32, generator=g)) + 0.02
    raw[:, :2] = 80.0  # outliers
    raw[1, 5, :7] = float("nan")
    raw[3] = 10.0 - ref[3]  # depth that falls where the reference rises: a scale+shift fit gives a negative scale
    valid = torch.rand(B, 24, 32, generator=g) > 0.3
    valid[4] = False
    valid[4, 0, :10] = True  # 10 valid pixels < min_valid
    fits = fit_depth_batch(raw, ref, valid, mode=mode, trim=0.2).to_host(min_valid=32)
    for b in range(4):
        want = fit_as_before(raw[b], ref[b], valid[b], mode=mode, trim=0.2)
        assert (fits[b].scale, fits[b].shift) == pytest.approx((want.scale, want.shift), rel=1e-9, abs=1e-9), b
        assert fits[b].residual == pytest.approx(want.residual, rel=1e-9) and fits[b].inliers == want.inliers
        assert fits[b].valid == int((valid[b] & torch.isfinite(raw[b])).sum())
    assert (fits[4].scale, fits[4].shift, fits[4].valid, fits[4].inliers) == (1.0, 0.0, 10, 0)
    assert "only 10 valid" in fits[4].warning
    assert fits[0].warning is None
    if mode == AlignMode.SCALE_SHIFT:
        assert fits[3].warning is not None and "scale-only fit" in fits[3].warning
    else:
        assert fits[3].warning is None


def test_undetermined_and_unchecked_fits_say_what_they_kept():
    from mirage.memory.align import fit_depth_batch

    g = torch.Generator().manual_seed(5)
    ref = 1.0 + 4.0 * torch.rand(2, 60, 104, generator=g, dtype=torch.float64)
    raw = torch.stack([torch.full((60, 104), 12.34, dtype=torch.float64), 5.0 + 1e-7 * torch.rand(60, 104, generator=g,
                                                                                            dtype=torch.float64)])
    valid = torch.ones(2, 60, 104, dtype=torch.bool)
    fits = fit_depth_batch(raw, ref, valid, mode=AlignMode.SCALE_SHIFT).to_host(min_valid=32)
    scale_only = fit_depth_batch(raw, ref, valid, mode=AlignMode.SCALE).to_host(min_valid=32)
    for f, want in zip(fits, scale_only, strict=True):  # constant raw depth: no shift can be told from the scale
        assert "undetermined" in f.warning and (f.scale, f.shift) == (want.scale, 0.0) and math.isfinite(f.residual)
    none = fit_depth_batch(raw, ref, torch.zeros_like(valid), mode=AlignMode.NONE).to_host(min_valid=32)
    assert [(f.scale, f.valid, f.warning) for f in none] == [(1.0, 0, None)] * 2  # NONE fits nothing: no warning


def test_save_load_round_trip_bit_exact_and_wrong_latent_space(tmp_path):
    mem, _ = _memory(dtype=torch.bfloat16)
    c2w = _c2w_shift(2)
    r = mem.read(K[None], invert_rigid(c2w)[None])
    _write_view(mem, c2w, torch.randn(C, h, w).bfloat16(), torch.full((1, H, W), Z), r.holes.expand(2, h, w))
    p = tmp_path / "mem.safetensors"
    mem.save(p)
    assert not list(tmp_path.glob(".*part*"))  # atomic: no temp file left
    back = LatentMemory.load(p, latent_channels=C, stride=S, temporal_stride=TS, model_id="test/vae")
    assert back.store.features.dtype == torch.bfloat16
    assert torch.equal(back.store.xyz, mem.store.xyz) and torch.equal(back.store.features, mem.store.features)
    assert torch.equal(back.store.birth, mem.store.birth)
    assert back.config == mem.config and back.voxel_size == mem.voxel_size and back.writes == mem.writes
    assert isinstance(load_memory(p), LatentMemory)
    Kf, wf = K[None].expand(5, 3, 3), invert_rigid(c2w)[None].expand(5, 4, 4)
    assert torch.equal(back.read(Kf, wf).latents, mem.read(Kf, wf).latents)
    with pytest.raises(MemoryFileError, match="latent_channels is 4, this run needs 16"):
        LatentMemory.load(p, latent_channels=16)
    with pytest.raises(MemoryFileError, match="stride"):
        LatentMemory.load(p, stride=16)
    with pytest.raises(MemoryFileError, match="model_id"):
        LatentMemory.load(p, model_id="other/vae")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(p.read_bytes()[:200])
    with pytest.raises(MemoryFileError, match="corrupt"):
        LatentMemory.load(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(MemoryFileError):
        LatentMemory.load(junk)
    with pytest.raises(MemoryFileError, match="not found"):
        LatentMemory.load(tmp_path / "missing.safetensors")


def test_export_ply(tmp_path):
    mem, _ = _memory()
    p = tmp_path / "cloud.ply"
    mem.export_ply(p, decode=lambda z: z[:, :3].repeat(1, 1, 2, 2).clamp(-1, 1))
    data = p.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert b"element vertex 96" in head and b"binary_little_endian" in head
    assert len(body) == 96 * 15
    x, y, z = struct.unpack("<fff", body[:12])
    assert z == pytest.approx(Z)
    mem.export_ply(tmp_path / "false.ply")  # no decoder: false colours
    assert (tmp_path / "false.ply").stat().st_size == len(data)


def test_invalid_depth_masked_and_counted():
    depth = torch.full((H, W), Z)
    depth[:S, :S] = float("nan")  # token (0, 0): every pixel invalid
    depth[:S, S : 2 * S] = -1.0  # token (0, 1)
    depth[S : 2 * S, :S] = 0.0  # token (1, 0)
    depth[S, S] = float("inf")  # one pixel of token (1, 1): the token keeps its median of the rest
    mem, _ = _memory(depth=depth)
    rep = mem.init_report
    assert rep.invalid_pixels == 3 * S * S + 1 and rep.rejected_tokens == 3 and rep.tokens == h * w - 3
    assert "were not stored" in rep.warning
    r = mem.read(K[None], torch.eye(4)[None])
    assert r.holes[0, 0, 0] and r.holes[0, 0, 1] and r.holes[0, 1, 0] and int(r.holes.sum()) == 3
    assert r.depth[0, 1, 1] == Z


def test_footprint_min_vs_median():
    depth = torch.full((H, W), 4.0)
    depth[:3, :S] = 1.0  # 24 of 64 pixels of token (0, 0) are near
    for mode, want in ((FootprintDepth.MEDIAN, 4.0), (FootprintDepth.MIN, 1.0)):
        mem, _ = _memory(MemoryConfig(footprint_depth=mode), depth=depth)
        assert float(mem.read(K[None], torch.eye(4)[None]).depth[0, 0, 0]) == want


def test_bad_inputs_raise_input_error():
    lat = torch.zeros(C, h, w)
    args = dict(image=torch.zeros(3, H, W), latents=lat, depth=torch.full((H, W), Z), K=K, c2w=torch.eye(4),
                space=LatentSpace(C, S, TS), config=MemoryConfig())
    Kbad = K.clone()
    Kbad[0, 2] = 5 * W
    with pytest.raises(InputError, match="principal point"):
        create_memory("latent", **{**args, "K": Kbad})
    with pytest.raises(InputError, match="shape"):
        create_memory("latent", **{**args, "K": torch.eye(4)})
    nan_pose = torch.eye(4)
    nan_pose[0, 3] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        create_memory("latent", **{**args, "c2w": nan_pose})
    with pytest.raises(InputError, match="does not match"):
        create_memory("latent", **{**args, "depth": torch.full((H, W + 8), Z)})
    with pytest.raises(InputError, match="no valid"):
        create_memory("latent", **{**args, "depth": torch.zeros(H, W)})
    with pytest.raises(InputError, match="encode_video"):
        create_memory("rgb", **args)
    with pytest.raises(InputError, match="phases"):
        MemoryConfig(phases=3)
    with pytest.raises(InputError, match="splat"):
        MemoryConfig(splat="cubic")
    with pytest.raises(InputError, match="unknown key"):
        MemoryConfig.from_dict({"voxel": 1.0})
    mem, _ = _memory()
    with pytest.raises(InputError, match="non-finite"):
        _write_view(mem, nan_pose, lat, torch.full((1, H, W), Z), torch.ones(2, h, w, dtype=torch.bool))
    with pytest.raises(InputError, match="region"):
        _write_view(mem, torch.eye(4), lat, torch.full((1, H, W), Z), torch.ones(3, h, w, dtype=torch.bool))


def test_write_rejects_invalid_generated_depth():
    mem, _ = _memory()
    c2w = _c2w_shift(3)
    r = mem.read(K[None], invert_rigid(c2w)[None])
    raw = torch.full((1, H, W), Z)
    raw[..., W - S :] = float("nan")  # the right-most latent column has no depth
    st = _write_view(mem, c2w, torch.zeros(C, h, w), raw, r.holes.expand(2, h, w))
    assert st.added == 2 * h and st.rejected == 2 * h  # frame 0 rejects h; frame 1 still sees those holes
    assert st.dropped == st.rejected and "no valid depth" in st.warning
