"""Components at their real architecture and size with random weights (``mirage bench --random-weights``).

Speed and memory do not depend on weight values, so the benchmark can measure the real models anywhere, without
a download. Quality does, so nothing built here is ever used for a quality figure.

The architectures are the published ones:

- Wan 2.1 VACE 1.3B transformer: 30 layers, 12 heads x 128, FFN 8960, text dim 4096, VACE blocks on every other
  layer (0, 2, ..., 28), 96 VACE input channels (``Wan-AI/Wan2.1-VACE-1.3B-diffusers``);
  14B: 40 layers, 40 heads x 128, FFN 13824, VACE blocks on layers 0, 5, ..., 35;
- the Wan 2.1 VAE: diffusers' ``AutoencoderKLWan()`` defaults (base 96, z 16, mults 1/2/4/4);
- Depth Pro (``apple/DepthPro-hf``): :func:`mirage.depth.depth_pro_config`, its real config (952 M parameters,
  three DINOv2 ViT-L/16 encoders at 384 px, FoV head) and its real image processor (1536 px input);
- the UMT5-XXL text encoder is not built: its output, (512, 4096) prompt embeddings, is drawn at random (mirage
  caches embeddings on disk, so the text encoder never runs during a render after the first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mirage.errors import InputError

logger = logging.getLogger("mirage")

WAN_TEXT_LEN = 512  # tokens of the UMT5 prompt embeddings Wan uses
WAN_TEXT_DIM = 4096

TRANSFORMER_CONFIGS = {
    "wan-vace-1.3b": dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=WAN_TEXT_DIM, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, vace_layers=list(range(0, 30, 2)),
        vace_in_channels=96,
    ),
    "wan-vace-14b": dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=WAN_TEXT_DIM, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, vace_layers=list(range(0, 40, 5)),
        vace_in_channels=96,
    ),
}

SCHEDULER_CONFIG = dict(
    _class_name="UniPCMultistepScheduler", prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
    num_train_timesteps=1000, solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
    final_sigmas_type="zero",
)


@dataclass(frozen=True)
class _RandomSource:
    """Stands in for hub.ResolvedSource in reports."""

    component: str
    source: str
    revision: str | None = None
    subfolder: str | None = None
    local: bool = True

    def describe(self) -> str:
        return self.source


def _init_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Small random weights (N(0, 0.02)), unit norm scales and zero biases, drawn on the model's own device."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator(device=p.device).manual_seed(seed)
            seed += 1
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32) * 0.02)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    return model


def random_components(preset: str, *, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype | None = None,
                      seed: int = 0):
    """A :class:`mirage.hub.Components` with the preset's real architectures and random weights.

    Args:
        preset: ``wan-vace-1.3b`` or ``wan-vace-14b``.
        device: where the models are built (built directly there: no host copy of 1.3B parameters).
        dtype: transformer and depth-model dtype; vae_dtype: VAE dtype (default float32).
    """
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import DepthProForDepthEstimation

    from mirage import depth as depth_mod
    from mirage.hub import Components, Lazy, Preset
    from mirage.vae import VAE

    preset = str(getattr(preset, "value", preset))
    if preset not in TRANSFORMER_CONFIGS:
        raise InputError(f"--random-weights: preset {preset!r} has no video model to build; use one of "
                         f"{', '.join(TRANSFORMER_CONFIGS)}")
    vae_dtype = vae_dtype or torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        vae_model = AutoencoderKLWan().to(vae_dtype).eval()
        transformer = WanVACETransformer3DModel(**TRANSFORMER_CONFIGS[preset]).to(dtype).eval().requires_grad_(False)
    for i, m in enumerate((vae_model, transformer)):
        _init_(m, seed + i)
    n_params = sum(p.numel() for p in transformer.parameters())
    logger.info("random weights: transformer %.2fB parameters (%s), VAE; Depth Pro on first use", n_params / 1e9,
                preset)

    def build_depth() -> depth_mod.DepthEstimator:
        # built on first use, like a real depth model (a render with --depth FILE and one chunk never needs it)
        with torch.device(device):
            depth_model = DepthProForDepthEstimation(depth_mod.depth_pro_config()).to(dtype).eval()
        _init_(depth_model, seed + 2)
        return depth_mod.DepthEstimator(
            depth_model, depth_mod.depth_pro_processor(), name="random:DepthPro", revision=None,
            family=depth_mod.DepthFamily.DEPTH_PRO,
            kind=depth_mod.DepthKind.METRIC, device=torch.device(device), dtype=dtype, max_batch=1,
        )

    src = {c: _RandomSource(c, f"random:{preset}/{c}") for c in ("vae", "transformer", "scheduler", "depth")}
    comps = Components(
        preset=Preset(preset), vae=VAE(vae_model, source=src["vae"].describe()), transformer=transformer,
        scheduler_config=dict(SCHEDULER_CONFIG), text_encoder=None, tokenizer=None,
        depth=Lazy(src["depth"], build_depth, keep=True), resolved=src,
        # (L, D) prompt embeddings, what UMT5 would give
        prompt_embeds=torch.randn(WAN_TEXT_LEN, WAN_TEXT_DIM, generator=torch.Generator(device="cpu").manual_seed(seed + 7)),
    )
    return comps
