"""Issue 16, part 2: the latent memory's VACE streams are in VACE's own distribution.

A causal video VAE encodes frame 0 alone into latent slot 0 and each later group of 4 frames (with the earlier ones
as context) into slot t >= 1; VACE learned its control stream from such encodes. The latent memory keeps, for its
init tokens, every slot of the static clip of the input image, and a read in slot t uses slot t's features. So for a
camera that does not move the conditioning mirage builds from its memory must equal, slot by slot, what diffusers'
own ``WanVACEPipeline`` builds from the video of the repeated input image (its ``preprocess_conditions``,
``prepare_video_latents`` and ``prepare_masks``). Checked at the Wan VAE's real architecture (diffusers'
``AutoencoderKLWan()`` defaults = Wan 2.1's config) with random weights: they show whether two constructions agree.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mirage.config import PipelineConfig, RenderOptions
from mirage.memory import (
    LatentMemory,
    MemoryConfig,
    MemoryKind,
    create_memory,
    encode_static_clip,
    load_memory,
)
from mirage.memory.store import PointStore
from mirage.sampling import SamplingProfile

W, H, F = 48, 32, 9  # 9 frames: latent slots 0..2 (slot 1 holds the causal start-up, slot 2 does not)


@pytest.fixture(scope="module")
def real_vae():
    from diffusers import AutoencoderKLWan

    from mirage.vae import VAE

    torch.manual_seed(0)
    return VAE(AutoencoderKLWan().eval(), source="AutoencoderKLWan() (Wan 2.1 architecture, random weights)")


@pytest.fixture(scope="module")
def pipe(real_vae):
    """The tiny preset's transformer, text encoder and depth model around the real-architecture Wan VAE."""
    from mirage.hub import build_tiny, load_components
    from mirage.pipeline import Pipeline

    build_tiny()
    comps = load_components("tiny", device="cpu", dtype=torch.float32)
    return Pipeline(PipelineConfig(preset="tiny", device="cpu", dtype="float32"),
                    components=replace(comps, vae=real_vae))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("slots") / "image.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def want(pipe, image_file) -> torch.Tensor:
    return _diffusers_streams(pipe, image_file)


def _diffusers_streams(pipe, image_file) -> torch.Tensor:
    """(T, 96, h, w): the control stream WanVACEPipeline.__call__ builds for the video of the repeated image with
    nothing to generate (mask all black), through its own preprocessing."""
    from diffusers import WanVACEPipeline

    ref = WanVACEPipeline(vae=pipe.vae.model, transformer=pipe.components.transformer, text_encoder=None,
                          tokenizer=None, scheduler=None)
    frame = Image.open(image_file).convert("RGB")
    black = Image.new("RGB", frame.size, (0, 0, 0))
    video, mask, refs = ref.preprocess_conditions(
        video=[frame] * F, mask=[black] * F, reference_images=None, batch_size=1, height=H, width=W, num_frames=F,
        dtype=torch.float32, device=torch.device("cpu"))
    latents = ref.prepare_video_latents(video, mask, refs, generator=None, device=torch.device("cpu"))
    packed = ref.prepare_masks(mask, refs, generator=None)
    return torch.cat([latents, packed], dim=1)[0].permute(1, 0, 2, 3)  # (1, 96, T, h, w) -> (T, 96, h, w)


def _captured_conditioning(pipe, image_file, steps: int, options: RenderOptions) -> list[torch.Tensor]:
    """Open a world on the image and step it ``steps`` times without moving; the VACE stream of each chunk."""
    seen = []
    denoiser = pipe.denoiser

    def spy(cond, *args, **kwargs):
        seen.append(cond.video_latents.detach().clone())
        return denoiser(cond, *args, **kwargs)

    pipe.denoiser = spy
    try:
        world = pipe.world(image_file, options)
        for _ in range(steps):
            world.step(torch.eye(4).repeat(F - 1, 1, 1), write_back=False)  # nothing is revealed
    finally:
        pipe.denoiser = denoiser
    return seen


OPTIONS = RenderOptions(size=(W, H), chunk_frames=F, steps=1, profile=SamplingProfile.FAST, fov=60.0, scores=False)


def test_static_camera_streams_equal_wan_vace_pipeline_slot_by_slot(pipe, image_file, want):
    first, second = _captured_conditioning(pipe, image_file, 2, OPTIONS)
    assert first.shape == want.shape == (3, 96, H // 8, W // 8)
    for t in range(want.shape[0]):  # inactive (the kept content), reactive (the empty video) and mask, per slot
        torch.testing.assert_close(first[t], want[t], rtol=0, atol=0, msg=f"chunk 0, latent slot {t}")
    # a later chunk: slot 0 is the known frame (the last generated one, encoded); its other slots are the memory's
    torch.testing.assert_close(second[1:], want[1:], rtol=0, atol=0)


def test_one_feature_per_token_is_not_what_vace_sees(want):
    """The test above can fail: the old memory (the image latent read into every slot) differs in slots >= 1,
    by far more than rounding, because the VAE's slots differ."""
    image_latent = want[0, :16]  # slot 0's inactive stream = the image latent
    for t in range(1, want.shape[0]):
        gap = (want[t, :16] - image_latent).abs().max()
        assert gap > 0.05, f"slot {t} is the image latent (gap {gap:.3g}): the slots would not need features"


# ---------------------------------------------------------------------------------------------------------------
# the store's slot features (no VAE needed)


K_MEM = torch.tensor([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])  # a 64 x 48 image: a 8 x 6 token grid


def _memory_with_slots(T: int = 4, C: int = 4, h: int = 6, w: int = 8) -> tuple[LatentMemory, torch.Tensor]:
    lat = torch.randn(T, C, h, w, generator=torch.Generator().manual_seed(0))
    depth = torch.full((h * 8, w * 8), 2.0)
    K = K_MEM
    mem = LatentMemory.from_view(lat, depth, K, torch.eye(4), stride=8, temporal_stride=4, config=MemoryConfig())
    return mem, lat


def test_each_latent_slot_reads_its_own_kind_of_token():
    mem, lat = _memory_with_slots()
    K = K_MEM.expand(13, 3, 3)
    read = mem.read(K, torch.eye(4).expand(13, 4, 4))  # 13 frames: slots 0..3, all at the init pose
    torch.testing.assert_close(read.latents, lat, rtol=0, atol=0)
    assert mem.store.slots == 3 and mem.stats().bytes == mem.store.nbytes
    # a longer chunk: slots past the kept ones read the last kept slot
    K17 = K[:1].expand(17, 3, 3)
    read = mem.read(K17, torch.eye(4).expand(17, 4, 4))
    torch.testing.assert_close(read.latents[4], lat[3], rtol=0, atol=0)


def test_written_tokens_have_one_feature_and_moving_reads_blend_the_slot_kind():
    mem, lat = _memory_with_slots()
    store = mem.store
    n0 = len(store)
    # a written token (one feature) far to the side of the init plane: every slot reads that one feature
    store.merge(torch.tensor([[5.0, 0.0, 2.0]]), torch.full((1, 4), 7.0), birth=1, voxel_size=0.01,
                winner=mem.config.voxel_winner)
    assert len(store) == n0 + 1 and int(store.slot_row[-1]) == -1
    feats = store.features_at(torch.tensor([0, 1, 3]))  # (3, N, C)
    assert torch.equal(feats[:, -1], torch.full((3, 4), 7.0))
    # init tokens: slot 0 their image latent, slot t their slot-t features
    torch.testing.assert_close(feats[0, :n0], lat[0].reshape(4, -1).T)
    torch.testing.assert_close(feats[2, :n0], lat[3].reshape(4, -1).T)
    # a moved camera (a sub-cell shift) blends the slot-t features of neighbouring init tokens, never slot 0's
    K = K_MEM.expand(5, 3, 3)
    w2c = torch.eye(4).repeat(5, 1, 1)
    w2c[:, 0, 3] = 0.1  # 0.1 m at 2 m depth: 2 pixels, a quarter latent cell
    read = mem.read(K, w2c)
    only_slot0 = PointStore(store.xyz, store.features, store.birth)
    old = LatentMemory(only_slot0, stride=8, temporal_stride=4, image_size=mem.image_size, config=mem.config,
                       voxel_size=mem.voxel_size).read(K, w2c)
    torch.testing.assert_close(read.latents[0], old.latents[0])  # slot 0: the same kind as before
    assert not torch.allclose(read.latents[1], old.latents[1])  # slot 1: the steady kind


def test_slot_features_survive_save_load_and_trim(tmp_path):
    mem, lat = _memory_with_slots()
    mem.save(tmp_path / "m.safetensors")
    back = load_memory(tmp_path / "m.safetensors")
    assert back.store.slots == 3
    torch.testing.assert_close(back.store.slot_features, mem.store.slot_features, rtol=0, atol=0)
    assert torch.equal(back.store.slot_row, mem.store.slot_row)
    # trimming keeps rows and points aligned
    back.store.trim(10)
    kept = back.store.features_at(torch.tensor([2]))[0]  # (10, C)
    last10 = lat[2].reshape(4, -1).T[-10:]
    torch.testing.assert_close(kept, last10, rtol=0, atol=0)


def test_memory_file_with_one_slot_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from mirage.errors import MemoryFileError

    mem, _ = _memory_with_slots()
    mem.save(tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(tmp_path / "m.safetensors")
    del tensors["slot_row"]
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(MemoryFileError, match="slot_features and slot_row go together"):
        load_memory(tmp_path / "bad.safetensors")


def test_rgb_memory_ignores_slots_and_create_memory_takes_a_clip(real_vae, image_file):
    """create_memory takes (T, C, h, w): the latent memory keeps the slots, the RGB memory only reads C."""
    from mirage.video import read_image

    img = read_image(image_file)
    clip = encode_static_clip(real_vae, img[None], 5)[0]  # (2, 16, h, w)
    torch.testing.assert_close(clip[0], real_vae.encode_image(img), rtol=0, atol=0)  # slot 0: the image latent
    space = real_vae.latent_space
    depth = torch.full((H, W), 3.0)
    K = torch.tensor([[40.0, 0, W / 2 - 0.5], [0, 40.0, H / 2 - 0.5], [0, 0, 1]])
    lat = create_memory(MemoryKind.LATENT, image=img, latents=clip, depth=depth, K=K, c2w=torch.eye(4), space=space,
                        config=MemoryConfig())
    assert lat.store.slots == 1
    rgb = create_memory(MemoryKind.RGB, image=img, latents=clip, depth=depth, K=K, c2w=torch.eye(4), space=space,
                        config=MemoryConfig(), encode_video=real_vae.encode_video)
    rgb_one = create_memory(MemoryKind.RGB, image=img, latents=clip[0], depth=depth, K=K, c2w=torch.eye(4),
                            space=space, config=MemoryConfig(), encode_video=real_vae.encode_video)
    w2c = torch.eye(4).repeat(5, 1, 1)
    w2c[:, 0, 3] = torch.linspace(0, 0.2, 5)
    a, b = rgb.read(K.expand(5, 3, 3), w2c), rgb_one.read(K.expand(5, 3, 3), w2c)
    assert rgb.stats().bytes == rgb_one.stats().bytes  # the RGB memory keeps colours, no slots
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)  # its read encodes its render


def test_polyphase_memory_keeps_the_slots_of_every_phase():
    """phases > 1 with static clips: each phase's tokens keep their own slots; the init view reads back exactly."""
    from mirage.memory import SplatMode, phase_offsets

    g = torch.Generator().manual_seed(4)
    lat = {o: torch.randn(3, 4, 6, 8, generator=g) for o in phase_offsets(8, 2)}  # (T=3, C, h, w) per shift
    cfg = MemoryConfig(phases=2, splat=SplatMode.TENT)
    mem = LatentMemory.from_view(lat[(0, 0)], torch.full((48, 64), 2.0), K_MEM, torch.eye(4), stride=8,
                                 temporal_stride=4, config=cfg, phase_latents=lat)
    assert mem.store.slots == 2 and mem.store.slot_features.shape[0] == len(mem.store)
    read = mem.read(K_MEM.expand(9, 3, 3), torch.eye(4).expand(9, 4, 4))  # slots 0, 1, 2 at the init pose
    torch.testing.assert_close(read.latents, lat[(0, 0)], rtol=0, atol=0)


def test_replaced_and_trimmed_init_tokens_give_back_their_slot_rows(tmp_path):
    """NEWEST voxel winners and the token budget drop init tokens: their slot rows go with them (bytes stay true)
    and every remaining token still reads its own slot features."""
    from mirage.memory import VoxelWinner

    mem, lat = _memory_with_slots()
    store = mem.store
    n0, per_token = len(store), store.slot_features[0].numel() * store.slot_features.element_size()
    own = {tuple(p.tolist()): lat[2].reshape(4, -1).T[i] for i, p in enumerate(store.xyz)}  # init token -> slot 2
    # two written tokens exactly on init tokens 5 and 9: with NEWEST they replace them
    rep = store.merge(store.xyz[[5, 9]].clone(), torch.full((2, 4), 3.0), birth=1, voxel_size=mem.voxel_size,
                      winner=VoxelWinner.NEWEST)
    assert rep.replaced == 2 and len(store) == n0 and store.slot_features.shape[0] == n0 - 2
    bytes_before_trim = store.nbytes
    store.trim(20)  # drops the 28 oldest: init tokens; 18 of them stay with the 2 written
    assert store.slot_features.shape[0] == 18 and int((store.slot_row >= 0).sum()) == 18
    per_point = 12 + 4 * 4 + 8 + 8  # xyz, 4 float32 features, birth, slot_row
    assert store.nbytes == bytes_before_trim - 28 * (per_token + per_point)
    feats = store.features_at(torch.tensor([2]))[0]  # (20, C)
    for p, f, row in zip(store.xyz, feats, store.slot_row, strict=True):
        if int(row) >= 0:
            torch.testing.assert_close(f, own[tuple(p.tolist())], rtol=0, atol=0)
        else:
            assert torch.equal(f, torch.full((4,), 3.0))
    mem.save(tmp_path / "m.safetensors")
    assert load_memory(tmp_path / "m.safetensors").store.nbytes == store.nbytes


def test_a_memory_without_slots_is_saved_as_a_version_1_file(tmp_path):
    import json

    from safetensors import safe_open

    mem, _ = _memory_with_slots(T=1)
    assert mem.store.slots == 0
    mem.save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["mirage"])["version"] == 1
