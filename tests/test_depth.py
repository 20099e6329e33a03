"""Tests for mirage.depth: tiny random depth models through the real loading path, intrinsics, depth files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mirage.depth import (
    MAX_DEPTH_M,
    MIN_DEPTH_M,
    RELATIVE_FAR,
    RELATIVE_NEAR,
    DepthFamily,
    DepthKind,
    IntrinsicsSource,
    _disparity_to_depth,
    build_tiny_depth_model,
    load_depth_model,
    read_depth_file,
    resolve_intrinsics,
    save_depth_png16,
)
from mirage.errors import DepthError, InputError, ModelError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CPU = torch.device("cpu")


def _photo() -> torch.Tensor:
    """(3, 320, 640) float32 in [-1, 1]: a real living-room photo."""
    path = SHARED / "images" / "pexels_0.png"
    if not path.is_file():
        pytest.skip(f"shared test image {path} is absent")
    rgb = np.array(Image.open(path).convert("RGB"))  # (320, 640, 3) uint8
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0


def _load(path: Path, **kw):
    return load_depth_model(str(path), revision=None, device=CPU, dtype=torch.float32, **kw)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_depth")
    dirs = {"pro": root / "pro", "da_metric": root / "da_metric", "da_rel": root / "da_rel"}
    build_tiny_depth_model(dirs["pro"], seed=0)
    build_tiny_depth_model(
        dirs["da_metric"], seed=0, family=DepthFamily.DEPTH_ANYTHING, kind=DepthKind.METRIC
    )
    build_tiny_depth_model(dirs["da_rel"], seed=0, family=DepthFamily.DEPTH_ANYTHING, kind=DepthKind.RELATIVE)
    return dirs


# ---------------------------------------------------------------------------------------------------------------
# tiny models: build, load, estimate


def test_tiny_build_is_deterministic(tmp_path, tiny_dirs):
    from safetensors.torch import load_file

    build_tiny_depth_model(tmp_path / "a", seed=0, family=DepthFamily.DEPTH_ANYTHING, kind=DepthKind.METRIC)
    build_tiny_depth_model(tmp_path / "b", seed=1, family=DepthFamily.DEPTH_ANYTHING, kind=DepthKind.METRIC)
    ref = load_file(tiny_dirs["da_metric"] / "model.safetensors")
    same = load_file(tmp_path / "a" / "model.safetensors")
    other = load_file(tmp_path / "b" / "model.safetensors")
    assert ref.keys() == same.keys() == other.keys()
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    assert not all(torch.equal(ref[k], other[k]) for k in ref)
    files = {p.name for p in tiny_dirs["pro"].iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert not any(name.endswith(".bin") for name in files)


def test_depth_pro_tiny_estimate_on_photo(tiny_dirs):
    image = _photo()
    est = _load(tiny_dirs["pro"])
    assert est.family is DepthFamily.DEPTH_PRO and est.kind is DepthKind.METRIC and est.predicts_fov
    res = est.estimate(image)
    assert res.depth.shape == (320, 640) and res.depth.dtype == torch.float32
    assert res.valid.shape == (320, 640) and res.valid.dtype == torch.bool
    assert (
        torch.isfinite(res.depth).all()
        and (res.depth >= MIN_DEPTH_M).all()
        and (res.depth <= MAX_DEPTH_M).all()
    )
    assert res.valid.float().mean() > 0.9
    assert float(res.depth[res.valid].std()) > 0.01  # image-dependent, not a constant
    assert res.kind is DepthKind.METRIC
    assert res.fov_x_deg is not None and 40.0 < res.fov_x_deg < 70.0  # tiny head calibrated to ~55 degrees


def test_depth_pro_scales_depth_with_given_fov(tiny_dirs):
    """Depth Pro's metric depth = f_px / (W * canonical inverse depth): depth ratio = tan ratio of half-FoVs."""
    image = _photo()
    est = _load(tiny_dirs["pro"])
    pred = est.estimate(image)
    wide = est.estimate(image, fov_x_deg=90.0)
    assert wide.fov_x_deg == pytest.approx(pred.fov_x_deg)  # still reports the prediction
    m = pred.valid & wide.valid & (pred.depth > 2 * MIN_DEPTH_M) & (pred.depth < MAX_DEPTH_M / 2)
    ratio = wide.depth[m] / pred.depth[m]
    expected = math.tan(math.radians(pred.fov_x_deg) / 2) / math.tan(math.radians(45.0))
    torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-4, atol=0)


def test_depth_pro_unusable_predicted_fov(tiny_dirs):
    est = _load(tiny_dirs["pro"])
    est.model.fov_model.head.layers[-1].bias.data.fill_(500.0)  # predicted FoV ~ 500 degrees
    image = _photo()
    with pytest.raises(ModelError, match="outside \\(1, 179\\).*--fov"):
        est.estimate(image)
    res = est.estimate(image, fov_x_deg=60.0)
    assert res.fov_x_deg is None
    assert any("unusable FoV" in w for w in res.warnings)


def test_depth_pro_zero_inverse_depth_is_far_and_valid(tiny_dirs):
    est = _load(tiny_dirs["pro"])
    est.model.head.layers[-2].bias.data.fill_(-1e4)  # ReLU -> canonical inverse depth 0 everywhere (sky)
    res = est.estimate(_photo())
    assert res.valid.all() and torch.all(res.depth == MAX_DEPTH_M)


def test_all_invalid_model_output_is_depth_error(tiny_dirs):
    est = _load(tiny_dirs["da_metric"])
    est.model.head.conv3.bias.data.fill_(float("nan"))
    with pytest.raises(DepthError, match="no valid depth in the image"):
        est.estimate(_photo())
    frames = est.estimate_frames(_photo()[None])  # the batch path reports instead of raising
    assert not frames.valid.any() and torch.isfinite(frames.depth).all()
    assert frames.warnings == ("frame 0: 204800 of 204800 pixels invalid (NaN/inf/<=0), masked",)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiny_models_on_cuda(tiny_dirs, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    image = _photo()
    cuda = torch.device("cuda")
    for which in ("pro", "da_metric", "da_rel"):
        ref = _load(tiny_dirs[which]).estimate(image)
        est = load_depth_model(str(tiny_dirs[which]), revision=None, device=cuda, dtype=dtype)
        res = est.estimate(image.to(cuda))
        assert res.depth.device.type == "cuda" and res.depth.dtype == torch.float32
        rel = ((res.depth.cpu() - ref.depth).abs() / ref.depth)[ref.valid & res.valid.cpu()]
        assert float(rel.median()) < 0.05, (which, float(rel.median()))
        with pytest.raises(InputError, match="move the image there first"):
            est.estimate(image)


@pytest.mark.parametrize("which", ["pro", "da_rel", "da_metric"])
def test_estimate_batch_equals_per_frame(tiny_dirs, which):
    image = _photo()[:, :, :320]  # (3, 320, 320): keeps the test fast
    frames = torch.stack([image, image.flip(-1), image * 0.5, -image])  # (4, 3, 320, 320)
    est = _load(tiny_dirs[which], max_batch=3)  # chunks of 3 + 1
    batch = est.estimate_batch(frames)
    assert batch.shape == (4, 320, 320) and batch.dtype == torch.float32
    singles = torch.stack([est.estimate(f).depth for f in frames])
    torch.testing.assert_close(batch, singles, rtol=1e-4, atol=1e-5)
    assert float((batch[0] - batch[2]).abs().max()) > 1e-3  # frames differ, so the comparison means something


@pytest.mark.parametrize("which", ["pro", "da_rel"])
def test_estimate_batch_reads_back_only_its_range_check(tiny_dirs, which):
    """The write-back's depth calls: besides the input range check, nothing waits for the model (no warnings
    counted), so the write's fits and renders queue behind it on a GPU (docs/memory.md, Write-back)."""
    from _host_reads import HostReads

    frames = torch.stack([_photo()[:, :, :320]] * 4)
    est = _load(tiny_dirs[which], max_batch=3)
    est.estimate_batch(frames[:1], fov_x_deg=60.0)  # loads lazily what it loads
    with HostReads() as reads:
        est.estimate_batch(frames, fov_x_deg=60.0)
    assert reads.count <= 2, reads.sites  # the min and max of the frames (their range check)
    with HostReads() as reads:
        est.estimate_frames(frames, fov_x_deg=60.0)  # counts invalid pixels for its warnings: reads back
    assert reads.count > 4, reads.sites


def test_relative_model_range_and_warning(tiny_dirs):
    est = _load(tiny_dirs["da_rel"])
    assert est.kind is DepthKind.RELATIVE and not est.predicts_fov
    res = est.estimate(_photo())
    assert res.kind is DepthKind.RELATIVE and res.fov_x_deg is None
    assert float(res.depth.min()) == pytest.approx(RELATIVE_NEAR, rel=1e-4)
    assert float(res.depth.max()) == pytest.approx(RELATIVE_FAR, rel=1e-4)
    assert any("relative" in w and "scene units" in w for w in res.warnings)


def test_metric_depth_anything_bounded_by_max_depth(tiny_dirs):
    res = _load(tiny_dirs["da_metric"]).estimate(_photo())
    assert res.kind is DepthKind.METRIC and res.fov_x_deg is None and res.warnings == ()
    assert res.valid.all() and float(res.depth.max()) < 20.0 and float(res.depth.min()) > 0.0


def test_disparity_to_depth_analytic():
    raw = torch.tensor([[[0.0, 1.0, 2.0, float("nan")]]])  # (1, 1, 4)
    valid = torch.isfinite(raw)
    depth, flat = _disparity_to_depth(raw, valid)
    inv_mid = 1 / RELATIVE_FAR + 0.5 * (1 / RELATIVE_NEAR - 1 / RELATIVE_FAR)
    torch.testing.assert_close(depth[0, 0, :3], torch.tensor([RELATIVE_FAR, 1 / inv_mid, RELATIVE_NEAR]))
    assert not flat[0]
    depth, flat = _disparity_to_depth(torch.full((1, 2, 2), 3.0), torch.ones(1, 2, 2, dtype=torch.bool))
    assert flat[0] and torch.allclose(depth, torch.full_like(depth, 1 / inv_mid))


def test_estimate_input_checks(tiny_dirs):
    est = _load(tiny_dirs["da_metric"])
    image = _photo()
    with pytest.raises(InputError, match="expected RGB in \\[-1, 1\\]"):
        est.estimate(image * 127.5 + 127.5)
    with pytest.raises(InputError, match="frames: dtype torch.uint8"):
        est.estimate(((image + 1) * 127.5).to(torch.uint8))
    with pytest.raises(InputError, match="image: expected shape"):
        est.estimate(image[None])
    with pytest.raises(InputError, match="fov_x_deg"):
        est.estimate(image, fov_x_deg=200.0)


# ---------------------------------------------------------------------------------------------------------------
# strict loading


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _drop_bias(sd: dict) -> None:
    del sd["head.conv3.bias"]


def _add_extra(sd: dict) -> None:
    sd["head.extra.weight"] = torch.zeros(3)


def _reshape_bias(sd: dict) -> None:
    sd["head.conv3.bias"] = torch.zeros(2)


@pytest.mark.parametrize("edit, needle", [
    (_drop_bias, "missing keys: head.conv3.bias"),
    (_add_extra, "unexpected keys: head.extra.weight"),
    (_reshape_bias, "depth model"),
], ids=["missing_key", "unexpected_key", "mismatched_shape"])
def test_strict_loading(tmp_path, tiny_dirs, edit, needle):
    from safetensors.torch import load_file, save_file

    d = _copy(tiny_dirs["da_metric"], tmp_path / "m")
    sd = load_file(d / "model.safetensors")
    edit(sd)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=needle):
        _load(d)


def test_strict_loading_bin_only(tmp_path, tiny_dirs):
    from safetensors.torch import load_file

    d = _copy(tiny_dirs["da_metric"], tmp_path / "m")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no \\*.safetensors weights \\(found pytorch_model.bin\\)"):
        _load(d)


def test_loading_errors_are_model_errors(tmp_path, tiny_dirs):
    with pytest.raises(ModelError, match="not a folder"):
        _load(tmp_path / "nope")
    d = _copy(tiny_dirs["da_metric"], tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "glpn"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="model_type 'glpn' is not supported"):
        _load(d)
    d2 = _copy(tiny_dirs["da_metric"], tmp_path / "p")
    (d2 / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        _load(d2)


# ---------------------------------------------------------------------------------------------------------------
# intrinsics


def test_resolve_intrinsics_precedence():
    K, src, warns = resolve_intrinsics(
        640, 320, intrinsics=(500.0, 510.0, 300.0, 150.0), fov_x_deg=90.0, predicted_fov_x_deg=50.0
    )
    assert src is IntrinsicsSource.INTRINSICS and K.dtype == torch.float64
    assert K.tolist() == [[500.0, 0.0, 300.0], [0.0, 510.0, 150.0], [0.0, 0.0, 1.0]]
    assert any("--fov 90 ignored" in w for w in warns)

    K, src, warns = resolve_intrinsics(640, 320, fov_x_deg=90.0, predicted_fov_x_deg=50.0)
    assert src is IntrinsicsSource.FOV and warns == ()
    torch.testing.assert_close(K[0, 0], torch.tensor(320.0, dtype=torch.float64))  # W / 2 / tan(45 deg)
    assert (K[0, 2].item(), K[1, 2].item()) == (319.5, 159.5)

    K, src, warns = resolve_intrinsics(640, 320, predicted_fov_x_deg=60.0)
    assert src is IntrinsicsSource.MODEL and warns == ()
    assert K[0, 0].item() == pytest.approx(320.0 / math.tan(math.radians(30.0)))

    K, src, warns = resolve_intrinsics(640, 320, default_fov_x_deg=90.0)
    assert src is IntrinsicsSource.DEFAULT and K[0, 0].item() == pytest.approx(320.0)
    assert len(warns) == 1 and "assuming a horizontal FoV of 90" in warns[0]


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"fov_x_deg": 0.5}, "--fov: 0.5 degrees is outside"),
        ({"fov_x_deg": 179.0}, "--fov"),
        ({"fov_x_deg": float("nan")}, "--fov"),
        ({"intrinsics": (-1.0, 500.0, 320.0, 160.0)}, "--intrinsics: focal lengths"),
        ({"intrinsics": (500.0, 500.0, 700.0, 160.0)}, "--intrinsics: principal point"),
        ({"intrinsics": (500.0, 500.0, 320.0, -1.0)}, "--intrinsics: principal point"),
        ({"intrinsics": (500.0, 500.0, 320.0)}, "--intrinsics: .* not 4 finite numbers"),
        ({"intrinsics": (500.0, float("inf"), 320.0, 160.0)}, "--intrinsics"),
    ],
)
def test_resolve_intrinsics_validation(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        resolve_intrinsics(640, 320, **kwargs)


def test_resolve_intrinsics_bad_prediction():
    with pytest.raises(ModelError, match="predicted horizontal FoV 200"):
        resolve_intrinsics(640, 320, predicted_fov_x_deg=200.0)


# ---------------------------------------------------------------------------------------------------------------
# depth files


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_npy(tmp_path, dtype):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 20.0, size=(32, 64)).astype(dtype)
    np.save(tmp_path / "d.npy", depth)
    res = read_depth_file(tmp_path / "d.npy", 64, 32)
    assert res.depth.shape == (32, 64) and res.depth.dtype == torch.float32 and res.valid.all()
    np.testing.assert_allclose(res.depth.numpy(), depth.astype(np.float32), rtol=1e-7)
    assert res.kind is DepthKind.METRIC and res.warnings == () and res.fov_x_deg is None
    np.save(tmp_path / "c.npy", depth[None])  # (1, H, W) is accepted
    assert torch.equal(read_depth_file(tmp_path / "c.npy", 64, 32).depth, res.depth)


def test_png16_round_trip_exact_to_1mm(tmp_path):
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.2, 60.0, size=(24, 48))
    depth[0, 0] = 0.0  # invalid -> written as 0 -> read back invalid
    save_depth_png16(tmp_path / "d.png", torch.from_numpy(depth))
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode == "I;16"
    res = read_depth_file(tmp_path / "d.png", 48, 24)
    assert not res.valid[0, 0] and int(res.valid.sum()) == 24 * 48 - 1
    err = np.abs(res.depth.numpy().astype(np.float64) - depth)[res.valid.numpy()]
    assert err.max() <= 0.0005 + 1e-6  # half a millimetre (rounding) + float32
    assert res.warnings == ("d.png: 1 of 1152 pixels invalid (NaN/inf/<=0), masked",)
    assert not list(tmp_path.glob(".*part*"))  # atomic write left no temp file


def test_save_png16_out_of_range(tmp_path):
    with pytest.raises(InputError, match="65.535 m"):
        save_depth_png16(tmp_path / "d.png", np.full((4, 4), 70.0))
    assert not (tmp_path / "d.png").exists()


def test_resize_same_aspect_nearest(tmp_path):
    depth = np.arange(1, 9, dtype=np.float32).reshape(2, 4)  # (2, 4)
    np.save(tmp_path / "d.npy", depth)
    res = read_depth_file(tmp_path / "d.npy", 8, 4)
    assert res.depth.shape == (4, 8)
    expected = np.repeat(np.repeat(depth, 2, axis=0), 2, axis=1)  # each value becomes a 2x2 block
    np.testing.assert_array_equal(res.depth.numpy(), expected)
    assert res.warnings == ("d.npy: resized 4x2 -> 8x4 (nearest) to match the image",)


def test_resize_keeps_invalid_masked(tmp_path):
    depth = np.ones((2, 4), dtype=np.float32)
    depth[0, 0] = np.nan
    np.save(tmp_path / "d.npy", depth)
    res = read_depth_file(tmp_path / "d.npy", 8, 4)
    assert not res.valid[:2, :2].any() and res.valid.sum() == 32 - 4


def test_other_aspect_is_error(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((32, 32), dtype=np.float32))
    with pytest.raises(DepthError, match="size 32x32 has another aspect ratio than the 64x32 image"):
        read_depth_file(tmp_path / "d.npy", 64, 32)


def test_invalid_values_counted_and_masked(tmp_path):
    depth = np.full((10, 20), 2.0, dtype=np.float32)
    depth[0, :3] = np.nan
    depth[1, :4] = -1.0
    depth[2, :2] = np.inf
    depth[3, 0] = 0.0
    np.save(tmp_path / "depth.npy", depth)
    res = read_depth_file(tmp_path / "depth.npy", 20, 10)
    assert res.warnings == ("depth.npy: 10 of 200 pixels invalid (NaN/inf/<=0), masked",)
    assert int(res.valid.sum()) == 190 and not res.valid[0, :3].any() and not res.valid[1, :4].any()
    assert torch.isfinite(res.depth).all() and (res.depth[res.valid] == 2.0).all()


def test_all_invalid_is_error(tmp_path):
    np.save(tmp_path / "d.npy", np.full((4, 4), np.nan, dtype=np.float32))
    with pytest.raises(DepthError, match="all 16 pixels invalid"):
        read_depth_file(tmp_path / "d.npy", 4, 4)


@pytest.mark.parametrize(
    "mode, pattern",
    [("L", "an 8-bit grayscale PNG, expected a 16-bit"), ("RGB", "an RGB PNG, expected a 16-bit")],
)
def test_png_wrong_mode_is_error(tmp_path, mode, pattern):
    Image.new(mode, (8, 4), 100 if mode == "L" else (1, 2, 3)).save(tmp_path / "d.png")
    with pytest.raises(DepthError, match=pattern):
        read_depth_file(tmp_path / "d.png", 8, 4)


def test_bad_files_are_errors(tmp_path):
    np.save(tmp_path / "i.npy", np.ones((4, 4), dtype=np.int32))
    with pytest.raises(DepthError, match="dtype int32, expected float metres"):
        read_depth_file(tmp_path / "i.npy", 4, 4)
    np.save(tmp_path / "s.npy", np.ones((2, 4, 4), dtype=np.float32))
    with pytest.raises(DepthError, match="shape \\(2, 4, 4\\)"):
        read_depth_file(tmp_path / "s.npy", 4, 4)
    (tmp_path / "g.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DepthError, match="cannot read as .npy"):
        read_depth_file(tmp_path / "g.npy", 4, 4)
    (tmp_path / "g.png").write_bytes(b"not a png")
    with pytest.raises(DepthError, match="cannot read as PNG"):
        read_depth_file(tmp_path / "g.png", 4, 4)
    (tmp_path / "d.exr").write_bytes(b"")
    with pytest.raises(DepthError, match="unknown extension '.exr'"):
        read_depth_file(tmp_path / "d.exr", 4, 4)
    with pytest.raises(DepthError, match="not found"):
        read_depth_file(tmp_path / "missing.npy", 4, 4)


def test_estimate_batch_with_a_fov_skips_the_fov_encoder_and_gives_the_same_depth(tiny_dirs):
    """Write-back depth (``estimate_batch`` with the generated frames' known FoV) does not run Depth Pro's FoV
    encoder, whose prediction the FoV would replace: the depth is the same, to the bit, and the encoder is not
    called; without a FoV (the input image) it still runs."""
    est = _load(tiny_dirs["pro"])
    calls = []
    est.model.fov_model.register_forward_hook(lambda *a: calls.append(1))
    frames = torch.stack([_photo(), _photo().flip(-1)])
    full = est.estimate_frames(frames, fov_x_deg=60.0)
    assert len(calls) == 2 and all(f is not None for f in full.fov_x_deg)  # one call per frame (max_batch 1)
    fast = est.estimate_batch(frames, fov_x_deg=60.0)
    assert len(calls) == 2  # not called again
    assert torch.equal(fast, full.depth)
    assert est.model.use_fov_model  # switched back on
    est.estimate_batch(frames)
    assert len(calls) == 4


def test_compiled_depth_model_gives_the_same_depth(tiny_dirs, monkeypatch):
    """``DepthEstimator.compile`` (``--compile``): the write-back's calls (FoV given) run compiled and give the same
    depth, one graph reused by every frame; a call that predicts the FoV (the input image) stays eager."""
    from torch._dynamo.testing import CompileCounter

    import mirage.depth.estimator as est_mod

    est = _load(tiny_dirs["pro"])
    frames = torch.stack([_photo(), _photo().flip(-1), _photo().flip(-2)])
    ref = est.estimate_batch(frames, fov_x_deg=60.0)
    ref_image = est.estimate(frames[0])
    counter = CompileCounter()
    real = torch.compile
    monkeypatch.setattr(est_mod.torch, "compile", lambda m, **kw: real(m, backend=counter, **kw))
    torch._dynamo.reset()
    est.compile()
    est.compile()
    got = est.estimate_batch(frames, fov_x_deg=60.0)  # 3 calls of batch 1
    assert counter.frame_count == 1
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    est.estimate_batch(frames[:1].flip(-1), fov_x_deg=50.0)
    image = est.estimate(frames[0])  # FoV predicted: eager
    assert counter.frame_count == 1  # another frame, another FoV: the same graph; the input image not compiled
    assert torch.equal(image.depth, ref_image.depth) and image.fov_x_deg == ref_image.fov_x_deg
    torch._dynamo.reset()


def test_offloaded_fov_model_lives_in_host_memory_and_gives_the_same_estimate(tiny_dirs, monkeypatch):
    """``DepthEstimator.offload_fov_model`` (the pipeline's default on CUDA): Depth Pro's FoV model goes under
    diffusers' group offloading (its weights in host memory, onloaded leaf by leaf inside its forward), the rest of
    the model does not, the FoV and depth it predicts are the resident model's, and the write-back's calls, which
    skip it, are unchanged. On the CPU the onload device is the CPU: what is checked is the hooks and the math."""
    from diffusers.hooks import HookRegistry

    est = _load(tiny_dirs["pro"])
    frames = torch.stack([_photo(), _photo().flip(-1)])
    ref = est.estimate(frames[0])
    ref_batch = est.estimate_batch(frames, fov_x_deg=60.0)

    def offloaded(module) -> bool:  # leaf level: diffusers hooks every leaf that holds weights
        registry = getattr(module, "_diffusers_hook", None)
        return isinstance(registry, HookRegistry) and "group_offloading" in registry.hooks

    def leaves(module) -> list:
        return [m for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False))]

    est.offload_fov_model()
    est.offload_fov_model()  # once
    assert leaves(est.model.fov_model) and all(offloaded(m) for m in leaves(est.model.fov_model))
    assert not any(offloaded(m) for m in est.model.depth_pro.modules())  # the rest stays resident
    got = est.estimate(frames[0])  # predicts the FoV: the weights visit the onload device for the call
    assert got.fov_x_deg == ref.fov_x_deg and torch.equal(got.depth, ref.depth)
    assert torch.equal(est.estimate_batch(frames, fov_x_deg=60.0), ref_batch)
