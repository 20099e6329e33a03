"""VAE wrapper: Wan temporal layout and normalisation on the tiny VAE; TAESD round trip on a real photo."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage import hub
from mirage.errors import InputError, ModelError
from mirage.hub import load_vae
from mirage.vae import VaeKind

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="module")
def wan_vae(tmp_path_factory):
    root = hub.build_tiny(tmp_path_factory.mktemp("mirage-cache"))
    return load_vae(root / "vae", device="cpu", dtype=torch.float32)


def _video(f, h=32, w=48, seed=0):
    return torch.rand(f, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_wan_shapes_and_strides(wan_vae):
    assert wan_vae.kind is VaeKind.WAN
    assert (wan_vae.spatial_stride, wan_vae.temporal_stride, wan_vae.latent_channels) == (8, 4, 16)
    lat = wan_vae.encode_video(_video(9))
    assert lat.shape == (3, 16, 4, 6)
    assert wan_vae.decode(lat).shape == (9, 3, 32, 48)
    assert wan_vae.encode_image(_video(1)[0]).shape == (16, 4, 6)
    assert wan_vae.latent_frame_indices(9) == [0, 4, 8]
    assert wan_vae.latent_frame_indices(1) == [0]
    assert wan_vae.num_latent_frames(81) == 21 and wan_vae.num_pixel_frames(21) == 81
    out = wan_vae.decode(lat)
    assert out.min() >= -1 and out.max() <= 1


def test_wan_rejects_bad_sizes(wan_vae):
    with pytest.raises(InputError, match="4k\\+1 frames \\(e.g. 9 or 13\\)"):
        wan_vae.encode_video(_video(10))
    with pytest.raises(InputError, match="multiple of 8"):
        wan_vae.encode_video(_video(5, h=30))
    with pytest.raises(InputError, match="expected shape"):
        wan_vae.decode(torch.zeros(3, 4, 4, 4))


def test_wan_temporal_layout_is_causal_groups_of_four(wan_vae):
    """Latent 0 <- frame 0 alone; latent t <- frames 4t-3..4t (and earlier frames as causal context)."""
    video = _video(9)
    base = wan_vae.encode_video(video)
    changed = video.clone()
    changed[5] = -changed[5]  # frame 5 belongs to latent frame 2 (frames 5..8)
    lat = wan_vae.encode_video(changed)
    assert torch.equal(lat[0], base[0]) and torch.equal(lat[1], base[1])
    assert (lat[2] - base[2]).abs().max() > 1e-4
    changed = video.clone()
    changed[0] = -changed[0]
    lat = wan_vae.encode_video(changed)
    assert (lat[0] - base[0]).abs().max() > 1e-4


def test_wan_normalisation_matches_diffusers_formula(wan_vae):
    video = _video(5)
    raw = wan_vae.model.encode(video.permute(1, 0, 2, 3)[None]).latent_dist.mode()  # (1, C, T, h, w)
    cfg = wan_vae.model.config
    mean = torch.tensor(cfg.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, 16, 1, 1, 1)
    expected = ((raw - mean) / std)[0].permute(1, 0, 2, 3)
    torch.testing.assert_close(wan_vae.encode_video(video), expected)
    torch.testing.assert_close(wan_vae.denormalize(wan_vae.normalize(raw)), raw, rtol=1e-5, atol=1e-5)
    # decode = WanVACEPipeline's: latents / (1/std) + mean, then vae.decode
    lat = wan_vae.encode_video(video)
    z = lat.permute(1, 0, 2, 3)[None] / (1.0 / std) + mean
    torch.testing.assert_close(wan_vae.decode(lat), wan_vae.model.decode(z).sample[0].permute(1, 0, 2, 3))


def test_empty_latents_cached(wan_vae):
    e = wan_vae.empty_latents(9, 32, 48)
    torch.testing.assert_close(e, wan_vae.encode_video(torch.zeros(9, 3, 32, 48)), rtol=0, atol=0)
    e.add_(1.0)  # callers get a copy
    torch.testing.assert_close(wan_vae.empty_latents(9, 32, 48), wan_vae.encode_video(torch.zeros(9, 3, 32, 48)))
    assert len(wan_vae._empty_cache) == 1
    # the empty latent is not zero: "no content" is a specific latent (normalised grey)
    assert wan_vae.empty_latents(9, 32, 48).abs().mean() > 1e-3


def test_from_pretrained_rejects_non_vae(tmp_path_factory):
    root = hub.build_tiny(tmp_path_factory.mktemp("mirage-cache2"))
    with pytest.raises(ModelError, match="transformer/config.json is a WanVACETransformer3DModel, expected AutoencoderKLWan or AutoencoderTiny"):
        load_vae(root / "transformer")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2).pow(2).mean().item()  # [-1, 1] -> [0, 1] scale
    return 10 * np.log10(1.0 / mse)


# measured 29.2 dB (taesd) and 35.0 dB (taesd3) at 448x256 with diffusers 0.42.1; floors 2 dB below
@pytest.mark.parametrize(("name", "channels", "floor_db"), [("taesd", 4, 27.0), ("taesd3", 16, 33.0)])
def test_taesd_round_trip_on_real_photo(name, channels, floor_db):
    folder = SHARED / "weights" / name
    photo = SHARED / "images" / "room.png"
    if not folder.is_dir() or not photo.is_file():
        pytest.skip(f"shared data absent: {folder} / {photo}")
    from PIL import Image

    img = Image.open(photo).convert("RGB").resize((448, 256), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1  # (3, 256, 448)
    vae = load_vae(folder, device="cpu", dtype=torch.float32)
    assert vae.kind is VaeKind.TINY
    assert (vae.spatial_stride, vae.temporal_stride, vae.latent_channels) == (8, 1, channels)
    lat = vae.encode_image(x)
    assert lat.shape == (channels, 32, 56)
    video = torch.stack([x, x.flip(-1)])  # TAESD: frames independent, any count
    assert vae.latent_frame_indices(2) == [0, 1]
    rec = vae.decode(vae.encode_video(video))
    assert rec.shape == (2, 3, 256, 448)
    psnr = _psnr(rec[0], x)
    assert psnr > floor_db, f"{name} PSNR {psnr:.2f} dB"
    torch.testing.assert_close(rec[1], vae.decode(vae.encode_image(x.flip(-1))[None])[0])


def test_channels_last_decoder_is_the_same_math(tmp_path):
    """On CUDA mirage decodes with the decoder's convolutions in channels-last-3d (faster cuDNN kernels): the
    layout change itself must not change the result (checked here in float32 on the CPU, on a VAE of its own; on
    the GPU by scripts/gpu_smoke.py)."""
    vae = load_vae(hub.build_tiny(tmp_path) / "vae", device="cpu", dtype=torch.float32)
    z = vae.encode_video(_video(9))
    raw = vae.denormalize(z.permute(1, 0, 2, 3)[None])
    with torch.no_grad():
        ref = vae.model.decode(raw).sample
    vae._channels_last_decoder()
    convs = [m for m in vae.model.decoder.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last_3d) for c in convs)
    with torch.no_grad():
        out = vae.model.decode(raw.contiguous(memory_format=torch.channels_last_3d)).sample
    assert torch.allclose(out, ref, atol=1e-5)
    # the wrapper on the CPU feeds NCDHW latents to the (now channels-last) weights: still the same result
    assert torch.allclose(vae.decode(z), ref[0].permute(1, 0, 2, 3), atol=1e-5)


def test_compiled_wan_vae_is_the_same_math_and_compiles_once_per_call_kind(tmp_path, monkeypatch):
    """``VAE.compile`` (``--compile``): the encoder's call and the decoder's regions under ``torch.compile`` give the
    eager result, and clips of other lengths reuse the compiled code. The backend here records the graphs and runs
    them as traced (no inductor): what is checked is the tracing and its guards, which decide recompiles."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    import mirage.vae as vae_mod

    root = hub.build_tiny(tmp_path)
    vae = load_vae(root / "vae", device="cpu", dtype=torch.float32)
    eager_vae = load_vae(root / "vae", device="cpu", dtype=torch.float32)
    videos = [_video(f, seed=f) for f in (9, 5, 13)]
    eager_z = [vae.encode_video(v) for v in videos]
    eager_x = [vae.decode(z) for z in eager_z]
    graphs: list[tuple[str, bool]] = []  # (compiled function's name, all its input sizes static)

    def recording(fn):
        def backend(gm, example_inputs):
            static = all(is_concrete_int(d) for t in example_inputs if isinstance(t, torch.Tensor) for d in t.shape)
            graphs.append((fn.__name__, static))
            return gm.forward
        return backend

    real_compile = torch.compile
    monkeypatch.setattr(vae_mod.torch, "compile", lambda fn, **kw: real_compile(fn, backend=recording(fn), **kw))
    torch._dynamo.reset()
    vae.compile()
    vae.compile()  # once only
    regions = vae_mod.decoder_regions(vae.model.decoder)
    got_z = [vae.encode_video(videos[0])]
    got_x = [vae.decode(got_z[0])]
    after_first = len(graphs)
    per_fn = collections.Counter(name for name, _ in graphs)
    # the encoder and every decoder region: the first call, the second, the steady state; each region on its own
    # code object, so none sees another's sizes as a change of size: every graph of the first size is static
    assert len(per_fn) == len(regions) + 1 and max(per_fn.values()) <= 3, per_fn
    assert all(static for _, static in graphs), graphs
    for v in videos[1:]:  # other lengths: the slices diffusers passes have other strides, copied to fresh ones
        got_z.append(vae.encode_video(v))
        got_x.append(vae.decode(got_z[-1]))
    assert len(graphs) == after_first
    for a, b in zip(got_z + got_x, eager_z + eager_x, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # a batch of images of other aspects: the second size recompiles with the size dynamic, later sizes reuse it
    torch._dynamo.utils.counters.clear()
    counts = []
    for h, w in ((48, 32), (24, 64), (40, 40), (16, 80)):
        v = _video(5, h=h, w=w)
        torch.testing.assert_close(vae.decode(vae.encode_video(v)), eager_vae.decode(eager_vae.encode_video(v)),
                                   rtol=1e-5, atol=1e-5)
        counts.append(len(graphs))
    assert counts[0] > after_first and counts[1:] == [counts[0]] * 3, counts
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["total"] == frames["ok"], dict(torch._dynamo.utils.counters["unimplemented"])
    torch._dynamo.reset()
