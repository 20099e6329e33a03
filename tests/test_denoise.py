"""Denoise stage: parity with diffusers' WanVACEPipeline on the tiny preset, and the latent-memory conditioning."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from mirage import hub
from mirage.denoise import (
    MASK_CHANNELS,
    Denoiser,
    conditioning_from_latents,
    conditioning_from_video,
    make_scheduler,
    pack_mask,
)
from mirage.errors import InputError, ModelError
from mirage.prompt import clean_prompt, encode_prompt
from mirage.sampling import WAN_NEGATIVE_PROMPT

F, H, W = 9, 32, 32  # 3 latent frames of 4x4 cells; 2x2 transformer tokens
MAX_LEN = 16


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirage-cache")
    return hub.load_components(hub.Preset.TINY, tiny_root=root, dtype=torch.float32, need_depth=False)


@pytest.fixture(scope="module")
def embeds(comps):
    tok = comps.tokenizer()
    return encode_prompt(comps.text_encoder, tok, "a room with a sofa", MAX_LEN), encode_prompt(comps.text_encoder, tok, "", MAX_LEN)


def _video_and_mask(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    masks = np.zeros((F, H, W), np.uint8)
    masks[:, 8:24, 16:32] = 255
    masks[5:, 0:8, 0:8] = 255  # a hole that appears mid-video
    # same formula as diffusers' VideoProcessor (PIL -> /255 -> 2x-1)
    video = (2.0 * (torch.from_numpy(frames).float() / 255.0) - 1.0).permute(0, 3, 1, 2)  # (F, 3, H, W)
    return frames, masks, video, torch.from_numpy(masks > 0)


def _pipeline(comps):
    from diffusers import WanVACEPipeline

    pipe = WanVACEPipeline(
        vae=comps.vae.model, transformer=comps.transformer, text_encoder=comps.text_encoder(),
        tokenizer=comps.tokenizer(), scheduler=make_scheduler(comps.scheduler_config),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "guidance, negative, flow_shift",
    [
        (1.0, None, None),  # the --fast profile: one forward per step, the repo's scheduler config
        (3.0, "", None),  # guidance with diffusers' own default negative prompt ("")
        (5.0, WAN_NEGATIVE_PROMPT, 5.0),  # the standard profile at 720p: Wan's negative prompt, shift 5.0
    ],
    ids=["no-guidance", "guidance-empty-negative", "standard-wan-negative-shift5"],
)
def test_denoiser_matches_wan_vace_pipeline(comps, embeds, guidance, negative, flow_shift, monkeypatch):
    import diffusers.pipelines.wan.pipeline_wan_vace as pwv
    from diffusers import UniPCMultistepScheduler

    # diffusers' prompt_clean needs ftfy (absent here): the identity, as mirage's clean_prompt (test below)
    monkeypatch.setattr(pwv, "ftfy", types.SimpleNamespace(fix_text=lambda s: s), raising=False)
    pe, _ = embeds
    frames, masks, video, mask = _video_and_mask()
    pipe = _pipeline(comps)
    if flow_shift is not None:  # the way diffusers' WanVACEPipeline example sets it
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=flow_shift)
    theirs = pipe(  # diffusers encodes the negative prompt itself
        video=[Image.fromarray(a) for a in frames], mask=[Image.fromarray(m, mode="L") for m in masks],
        prompt_embeds=pe[None], negative_prompt=negative, max_sequence_length=MAX_LEN,
        height=H, width=W, num_frames=F, num_inference_steps=2, guidance_scale=guidance, conditioning_scale=0.7,
        generator=torch.Generator().manual_seed(123), output_type="latent",
    ).frames  # (1, C, T, h, w)
    ne = encode_prompt(comps.text_encoder, comps.tokenizer(), negative, MAX_LEN) if guidance > 1 else None
    cond = conditioning_from_video(comps.vae, video, mask)
    den = Denoiser(comps.transformer, comps.scheduler_config)
    steps = []
    ours = den(cond, pe, ne, num_frames=F, height=H, width=W, steps=2, guidance=guidance, flow_shift=flow_shift,
               conditioning_scale=0.7, seed=123, callback=lambda i, n: steps.append((i, n)))
    assert ours.shape == (3, 16, 4, 4) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs[0].permute(1, 0, 2, 3), rtol=1e-5, atol=1e-5)
    assert steps == [(1, 2), (2, 2)]
    # the control path matters: other conditioning, other result (so the parity above is not vacuous)
    other = conditioning_from_video(comps.vae, video, ~mask)
    flipped = den(other, pe, ne, num_frames=F, height=H, width=W, steps=2, guidance=guidance, flow_shift=flow_shift,
                  conditioning_scale=0.7, seed=123)
    assert (flipped - ours).abs().max() > 1e-3
    if guidance > 1:  # ... and so do the negative prompt and the shift
        other_neg = encode_prompt(comps.text_encoder, comps.tokenizer(), "a negative prompt", MAX_LEN)
        assert not torch.equal(other_neg, ne)
        moved = den(cond, pe, other_neg, num_frames=F, height=H, width=W, steps=2, guidance=guidance,
                    flow_shift=flow_shift, conditioning_scale=0.7, seed=123)
        assert (moved - ours).abs().max() > 1e-4
    if flow_shift is not None:
        unshifted = den(cond, pe, ne, num_frames=F, height=H, width=W, steps=2, guidance=guidance,
                        conditioning_scale=0.7, seed=123)
        assert (unshifted - ours).abs().max() > 1e-4


def _capture_schedulers(monkeypatch) -> list:
    """Every scheduler the denoiser builds (make_scheduler wrapped), to read what it was given."""
    import mirage.denoise as dn

    made, real = [], dn.make_scheduler

    def spy(config, flow_shift=None):
        made.append(real(config, flow_shift))
        return made[-1]

    monkeypatch.setattr(dn, "make_scheduler", spy)
    return made


@pytest.mark.parametrize("flow_shift", [None, 5.0, 16.0])
def test_scheduler_receives_the_flow_shift(comps, embeds, flow_shift, monkeypatch):
    from diffusers import UniPCMultistepScheduler

    pe, _ = embeds
    _, _, video, mask = _video_and_mask()
    den = Denoiser(comps.transformer, comps.scheduler_config)
    made = _capture_schedulers(monkeypatch)
    den(conditioning_from_video(comps.vae, video, mask), pe, num_frames=F, height=H, width=W, steps=4, seed=0,
        flow_shift=flow_shift)
    (sched,) = made
    want = comps.scheduler_config["flow_shift"] if flow_shift is None else flow_shift
    assert comps.scheduler_config["flow_shift"] == 3.0 and sched.config.flow_shift == want
    # the sigmas the sampler walked are diffusers' for that shift
    ref = UniPCMultistepScheduler.from_config(comps.scheduler_config, flow_shift=want)
    ref.set_timesteps(4)
    torch.testing.assert_close(sched.sigmas, ref.sigmas)
    base = UniPCMultistepScheduler.from_config(comps.scheduler_config)
    base.set_timesteps(4)
    assert torch.equal(sched.sigmas, base.sigmas) == (want == 3.0)
    if want > 3.0:  # a larger shift spends the steps at higher noise: every interior sigma is larger
        assert (sched.sigmas[1:-1] > base.sigmas[1:-1]).all()


def test_flow_shift_on_a_scheduler_without_one_is_a_clear_error(comps):
    cfg = dict(comps.scheduler_config, _class_name="DDIMScheduler")
    make_scheduler(cfg)  # no shift asked: fine
    with pytest.raises(ModelError, match="flow shift 5: scheduler DDIMScheduler has none"):
        make_scheduler(cfg, 5.0)
    with pytest.raises(ModelError, match="has none"):
        make_scheduler(dict(comps.scheduler_config, use_flow_sigmas=False), 5.0)


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_guidance_runs_two_forwards_per_step_with_the_negative_embeddings(comps, embeds, guidance, monkeypatch):
    pe, _ = embeds
    ne = encode_prompt(comps.text_encoder, comps.tokenizer(), WAN_NEGATIVE_PROMPT, MAX_LEN)
    _, _, video, mask = _video_and_mask()
    seen: list[torch.Tensor] = []
    model = comps.transformer
    real = type(model).forward

    def forward(self, *a, **kw):
        seen.append(kw["encoder_hidden_states"].detach().clone())  # (1, L, D)
        return real(self, *a, **kw)

    monkeypatch.setattr(type(model), "forward", forward)
    den = Denoiser(model, comps.scheduler_config)
    den(conditioning_from_video(comps.vae, video, mask), pe, ne if guidance > 1 else None, num_frames=F, height=H,
        width=W, steps=3, guidance=guidance, seed=0)
    if guidance == 1.0:
        assert len(seen) == 3 and all(torch.equal(s[0], pe) for s in seen)
    else:  # per step: the prompt, then the negative prompt
        assert len(seen) == 6
        assert all(torch.equal(s[0], pe) for s in seen[0::2]) and all(torch.equal(s[0], ne) for s in seen[1::2])
        assert not torch.equal(pe, ne)


def test_encode_prompt_matches_pipeline(comps, monkeypatch):
    import diffusers.pipelines.wan.pipeline_wan_vace as pwv

    # diffusers' prompt_clean needs ftfy (absent here): stub it as the identity for the comparison
    monkeypatch.setattr(pwv, "ftfy", types.SimpleNamespace(fix_text=lambda s: s), raising=False)
    pipe = _pipeline(comps)
    text = "  A room &amp; a   sofa\n"
    theirs = pipe._get_t5_prompt_embeds(text, max_sequence_length=MAX_LEN, device=torch.device("cpu"))
    ours = encode_prompt(comps.text_encoder, comps.tokenizer(), text, MAX_LEN)
    torch.testing.assert_close(ours, theirs[0])
    assert clean_prompt(text) == "A room & a sofa"
    n_tokens = len(comps.tokenizer()(clean_prompt(text)).input_ids)
    assert ours[n_tokens:].abs().max() == 0 and (ours[:n_tokens].abs().sum(dim=1) > 0).all()


def test_pack_mask_layout():
    mask = torch.zeros(F, H, W)
    mask[0, 8 + 3, 16 + 5] = 1  # frame 0, cell (1, 2), pixel (3, 5) inside it
    packed = pack_mask(mask, 3)
    assert packed.shape == (3, MASK_CHANNELS, 4, 4)
    # diffusers samples time with nearest-exact: latent frame 0 reads pixel frame floor(0.5 * 9 / 3) = 1
    assert packed.sum() == 0
    mask[1, 8 + 3, 16 + 5] = 1
    packed = pack_mask(mask, 3)
    assert packed.sum() == 1 and packed[0, 3 * 8 + 5, 1, 2] == 1


def test_latent_conditioning_equals_video_conditioning(comps):
    vae = comps.vae
    gen = torch.Generator().manual_seed(1)
    holes = torch.zeros(3, 4, 4, dtype=torch.bool)
    holes[:, 1:3, 2:4] = True  # holes aligned to whole latent cells, the same in every frame
    holes[:, 0, 0] = True
    pixel_holes = holes.repeat_interleave(8, 1).repeat_interleave(8, 2)[:1].expand(F, H, W)  # (F, H, W)
    video = torch.rand(F, 3, H, W, generator=gen) * 2 - 1
    video = video * (~pixel_holes)[:, None]  # an RGB render: 0 in holes
    from_video = conditioning_from_video(vae, video, pixel_holes)
    from_latents = conditioning_from_latents(vae, vae.encode_video(video), holes, F)
    empty = vae.empty_latents(F, H, W)
    assert from_latents.video_latents.shape == from_video.video_latents.shape == (3, 32 + MASK_CHANNELS, 4, 4)
    # reactive: diffusers encodes video * mask == zeros -> exactly the empty-video latent
    torch.testing.assert_close(from_latents.reactive, from_video.reactive, rtol=0, atol=0)
    torch.testing.assert_close(from_latents.reactive, empty)
    # mask channels: identical (holes constant in time and per cell)
    torch.testing.assert_close(from_latents.mask, from_video.mask, rtol=0, atol=0)
    # inactive: identical where content is; holes take the empty latent
    keep = ~holes[:, None].expand_as(from_latents.inactive)
    torch.testing.assert_close(from_latents.inactive[keep], from_video.inactive[keep], rtol=0, atol=0)
    torch.testing.assert_close(from_latents.inactive[~keep], empty[~keep], rtol=0, atol=0)
    # and the encoded render's own hole cells are near, not equal to, the empty latent (VAE receptive field)
    assert not torch.equal(from_video.inactive[~keep], empty[~keep])


def test_latent_conditioning_time_varying_holes(comps):
    holes = torch.zeros(3, 4, 4, dtype=torch.bool)
    holes[2, :2] = True
    lat = torch.randn(3, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    cond = conditioning_from_latents(comps.vae, lat, holes, F)
    assert torch.equal(cond.mask, holes[:, None].float().expand(3, 64, 4, 4))
    torch.testing.assert_close(cond.inactive[:2], lat[:2])
    with pytest.raises(InputError, match="num_frames = 9"):
        conditioning_from_latents(comps.vae, lat, holes, 13)


def test_denoiser_validates_inputs(comps, embeds):
    pe, _ = embeds
    _, _, video, mask = _video_and_mask()
    cond = conditioning_from_video(comps.vae, video, mask)
    den = Denoiser(comps.transformer, comps.scheduler_config)
    with pytest.raises(InputError, match="negative_prompt_embeds"):
        den(cond, pe, None, num_frames=F, height=H, width=W, steps=1, guidance=5.0)
    with pytest.raises(InputError, match="expected"):
        den(cond, pe, num_frames=13, height=H, width=W, steps=1)
    with pytest.raises(InputError, match="multiple of 16"):
        den(cond, pe, num_frames=F, height=24, width=W, steps=1)
    with pytest.raises(InputError, match="conditioning_scale"):
        den(cond, pe, num_frames=F, height=H, width=W, steps=1, conditioning_scale=[1.0, 1.0])
    a = den(cond, pe, num_frames=F, height=H, width=W, steps=1, seed=5)
    b = den(cond, pe, num_frames=F, height=H, width=W, steps=1, seed=5)
    c = den(cond, pe, num_frames=F, height=H, width=W, steps=1, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_denoiser_dtype_skips_modules_kept_in_float32(tmp_path_factory):
    """Loaded in bfloat16 (the GPU default), Wan keeps its norms / time embedder in float32 (as diffusers'
    from_pretrained does); the denoiser must still feed the model bfloat16. It used the first parameter's dtype,
    float32, and every bf16 render with loaded weights failed in the patch embedding."""
    bf = hub.load_components(hub.Preset.TINY, tiny_root=tmp_path_factory.mktemp("mirage-cache"),
                             dtype=torch.bfloat16, need_depth=False)
    assert {p.dtype for p in bf.transformer.parameters()} == {torch.float32, torch.bfloat16}  # the mixed load
    den = Denoiser(bf.transformer, bf.scheduler_config)
    assert den.dtype == torch.bfloat16
    embeds = encode_prompt(bf.text_encoder, bf.tokenizer(), "a room", MAX_LEN)
    _, _, video, mask = _video_and_mask()
    cond = conditioning_from_video(bf.vae, video.to(bf.vae.dtype), mask)
    out = den(cond, embeds, num_frames=F, height=H, width=W, steps=2, seed=0)
    assert out.shape == (3, 16, H // 8, W // 8) and torch.isfinite(out).all()
