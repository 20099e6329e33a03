"""FP8 inference of the video transformer (``--fp8``): the one place that knows what each mode changes.

``none`` (default): the transformer runs in the model dtype (bf16 on the GPU).
``attention``: every self-attention runs through cuDNN's FP8 flash attention (:mod:`mirage.attention`).
``all``: that, plus the transformer blocks' linear layers as FP8 matrix products (:class:`Fp8Linear`): the weight
quantized once per output channel, the activation per token at run time, float32 accumulation in
``torch._scaled_mm`` (the row-wise scaled FP8 product cuBLAS runs on Hopper).

Both trade accuracy for speed: on the H100, at 81 frames of 832x480, one step's output differs from the bf16 step
by a few percent (BENCHMARKS.md has the measured figures); bf16 against float32 differs by ~1%. They need a Hopper
(compute capability 9.0+) GPU, the model on it (no ``--offload``) and the ``fp8`` extra for the attention kernel
(``pip install 'mirage-video[fp8]'``: NVIDIA's nvidia-cudnn-frontend).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from mirage.attention import E4M3_MAX, AttentionKind, check_attention, set_attention
from mirage.errors import InputError

#: Linear layers smaller than this (in or out features) stay in the model dtype: FP8 does not pay for them.
MIN_FP8_FEATURES = 1024


class Fp8Mode(str, Enum):
    """What runs in FP8 (``--fp8``)."""

    NONE = "none"
    ATTENTION = "attention"  # self-attention through cuDNN FP8 flash attention
    ALL = "all"  # attention + the blocks' linear layers (per-row scaled FP8 products)


@dataclass(frozen=True)
class Fp8Applied:
    """What :func:`apply_fp8` changed."""

    mode: Fp8Mode
    attention_modules: int  # self-attention modules routed to the FP8 kernel
    linear_layers: int  # nn.Linear layers quantized to FP8


def parse_fp8(value: str | Fp8Mode) -> Fp8Mode:
    if isinstance(value, Fp8Mode):
        return value
    try:
        return Fp8Mode(str(value).lower())
    except ValueError:
        raise InputError(f"--fp8: unknown mode {value!r}; use one of "
                         f"{', '.join(m.value for m in Fp8Mode)}") from None


def check_fp8(mode: Fp8Mode, device: torch.device, dtype: torch.dtype) -> None:
    """Raise InputError (one line naming the fix) when ``mode`` cannot run here. Runs before any model loads."""
    if mode is Fp8Mode.NONE:
        return
    check_attention(AttentionKind.FP8, device, dtype, flag=f"--fp8 {mode.value}")


def quantize_rows_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise scaled float8 e4m3 of a 2D tensor: (x8 (M, K), descale (M, 1) float32), x ~= x8 * descale."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12)
    x8 = (x.float() * (E4M3_MAX / amax)).to(torch.float8_e4m3fn)
    return x8, amax / E4M3_MAX


class Fp8Linear(torch.nn.Module):
    """``y = x W^T + b`` as an FP8 product: W (out, in) quantized to e4m3 once, one scale per output channel;
    x (..., in) quantized per token (row) at each call; float32 accumulation; y in x's dtype.

    Relative error against the exact product is a few 1e-2 (e4m3 keeps 3 mantissa bits); tested against a float64
    reference in tests/test_precision.py."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w_q, w_descale = quantize_rows_e4m3(linear.weight.detach())
        self.register_buffer("weight_e4m3", w_q)  # (out, in)
        self.register_buffer("weight_descale", w_descale.reshape(1, -1))  # (1, out) float32
        self.bias = linear.bias  # (out,) in the model dtype, or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x_q, x_descale = quantize_rows_e4m3(x.reshape(-1, self.in_features))
        x_q = x_q.contiguous()  # cuBLAS wants it row-major; under torch.compile it may inherit a transposed layout
        y = torch._scaled_mm(x_q, self.weight_e4m3.t(), scale_a=x_descale, scale_b=self.weight_descale,
                             bias=self.bias, out_dtype=x.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _fp8_linear_filter(module: torch.nn.Module, fqn: str) -> bool:
    return (isinstance(module, torch.nn.Linear) and (fqn.startswith("blocks.") or fqn.startswith("vace_blocks."))
            and min(module.in_features, module.out_features) >= MIN_FP8_FEATURES)


def apply_fp8(transformer: Any, mode: Fp8Mode) -> Fp8Applied:
    """Switch a loaded Wan/VACE transformer (on its GPU, in bf16/fp16) to ``mode``, in place."""
    if mode is Fp8Mode.NONE:
        return Fp8Applied(mode, 0, 0)
    n_attn = set_attention(transformer, AttentionKind.FP8)
    n_lin = 0
    if mode is Fp8Mode.ALL:
        targets = [(name, m) for name, m in transformer.named_modules() if _fp8_linear_filter(m, name)]
        for name, linear in targets:
            parent_name, _, child = name.rpartition(".")
            setattr(transformer.get_submodule(parent_name), child, Fp8Linear(linear))
        n_lin = len(targets)
    return Fp8Applied(mode, n_attn, n_lin)
