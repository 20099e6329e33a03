"""Attention kernels for the video transformer's self-attention.

:class:`AttentionKind` is the closed set: ``sdpa`` (default) leaves the model on PyTorch's scaled-dot-product
attention in the model dtype (on an H100 the step runs cuDNN's flash kernel: 550-630 TFLOP/s at the 32,760-token
shape of an 81-frame 832x480 chunk); ``fp8`` runs the self-attention of every transformer block through cuDNN's
FP8 flash attention (Hopper and newer): Q, K, V, the softmax numerator P and the output O are float8 e4m3 with
one scale per tensor (O's is V's: |O| <= max|V|), products accumulate in float32, O is returned in the model
dtype. Cross-attention to the 512 text tokens stays on SDPA (it is ~1% of the step). Users reach it through
``--fp8`` (:mod:`mirage.precision`).

The FP8 kernel is reached through NVIDIA's cuDNN frontend (``pip install nvidia-cudnn-frontend``), which drives
the cuDNN library PyTorch already ships. It is an opaque custom op for ``torch.compile`` (no graph break).

Shapes at the boundary: ``q, k, v`` are ``(B, S, H, D)`` (diffusers' layout), CUDA, bfloat16; the result has
the same shape and dtype. The softmax scale is ``1/sqrt(D)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch

from mirage.errors import InputError, RuntimeFailure

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
#: Headroom of O's scale: |O| <= max|V| for exact softmax weights, but P is rounded to e4m3 (up to 2^-4 relative,
#: upwards too) while its row sums are kept in float32, so O can reach 1.0625 max|V|.
O_HEADROOM = 1.0625

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class AttentionKind(str, Enum):
    """Which kernel runs the transformer's self-attention."""

    SDPA = "sdpa"  # torch scaled_dot_product_attention in the model dtype
    FP8 = "fp8"  # cuDNN FP8 flash attention (Hopper+), per-tensor scaled e4m3 Q/K/V/P, fp32 accumulation


def sdpa_bshd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference attention in diffusers' layout: (B, S, H, D) in, (B, S, H, D) out."""
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def quantize_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled float8 e4m3: returns (x8, descale) with x ~= x8.float() * descale. No host sync.

    descale: float32 (1, 1, 1, 1) on x's device."""
    amax = x.detach().abs().amax().float().clamp_min(1e-12)
    scale = E4M3_MAX / amax
    x8 = (x.float() * scale).to(torch.float8_e4m3fn)  # scale in float32: a bf16 scale would bias it by up to 0.4%
    return x8, (1.0 / scale).reshape(1, 1, 1, 1)


def cudnn_frontend_available() -> str | None:
    """None when the cuDNN frontend imports, else why not (one line)."""
    try:
        import cudnn  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not available", reported to the user
        return f"{type(e).__name__}: {e}"
    return None


class _Fp8Graph:
    """One built cuDNN FP8 SDPA graph for a fixed (B, H, S_q, S_kv, D) on one device."""

    def __init__(self, b: int, h: int, s_q: int, s_kv: int, d: int, device: torch.device):
        import cudnn

        self.device = device
        io = cudnn.data_type.FP8_E4M3
        g = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT)
        bshd = lambda s: (s * h * d, d, h * d, 1)  # noqa: E731 - strides of a (B, S, H, D) tensor seen as (B, H, S, D)
        self.q = g.tensor(name="q", dim=(b, h, s_q, d), stride=bshd(s_q), data_type=io)
        self.k = g.tensor(name="k", dim=(b, h, s_kv, d), stride=bshd(s_kv), data_type=io)
        self.v = g.tensor(name="v", dim=(b, h, s_kv, d), stride=bshd(s_kv), data_type=io)
        scalar = lambda n: g.tensor(name=n, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=cudnn.data_type.FLOAT)  # noqa: E731
        self.dq, self.dk, self.dv = scalar("descale_q"), scalar("descale_k"), scalar("descale_v")
        self.ds, self.ss, self.so = scalar("descale_s"), scalar("scale_s"), scalar("scale_o")
        kwargs: dict[str, Any] = dict(q=self.q, k=self.k, v=self.v, descale_q=self.dq, descale_k=self.dk,
                                      descale_v=self.dv, descale_s=self.ds, scale_s=self.ss, scale_o=self.so,
                                      attn_scale=1.0 / math.sqrt(d), use_causal_mask=False, name="mirage_fp8_sdpa")
        try:
            o, _stats, amax_s, amax_o = g.sdpa_fp8(is_inference=True, **kwargs)
        except TypeError:  # newer frontends name it generate_stats
            o, _stats, amax_s, amax_o = g.sdpa_fp8(generate_stats=False, **kwargs)
        # on Hopper cuDNN writes O in e4m3 too (bf16 output is Blackwell-only); its scale is 448 / (max|V| *
        # O_HEADROOM): O is a convex combination of V's rows, up to the rounding of P
        self.o = o.set_output(True).set_dim((b, h, s_q, d)).set_stride(bshd(s_q)).set_data_type(io)
        self.amax_s = amax_s.set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(cudnn.data_type.FLOAT)
        self.amax_o = amax_o.set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(cudnn.data_type.FLOAT)
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
        self.graph = g
        self.workspace_size = g.get_workspace_size()
        self.handle = _handle(device)
        # P (the softmax numerator, in [0, 1]) maps onto the full e4m3 range
        self.scale_s = torch.full((1, 1, 1, 1), E4M3_MAX, device=device)
        self.descale_s = torch.full((1, 1, 1, 1), 1.0 / E4M3_MAX, device=device)
        self.amax_buf = torch.empty((2, 1, 1, 1, 1), device=device)

    def __call__(self, q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor,
                 dv: torch.Tensor) -> torch.Tensor:
        import cudnn

        o8 = torch.empty_like(q8)
        workspace = torch.empty(self.workspace_size, device=self.device, dtype=torch.uint8)
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(self.device).cuda_stream)
        self.graph.execute({self.q: q8, self.k: k8, self.v: v8, self.dq: dq, self.dk: dk, self.dv: dv,
                            self.ds: self.descale_s, self.ss: self.scale_s, self.so: 1.0 / (dv * O_HEADROOM),
                            self.o: o8, self.amax_s: self.amax_buf[0], self.amax_o: self.amax_buf[1]},
                           workspace, handle=self.handle)
        return o8


_HANDLES: dict[int, Any] = {}


def _handle(device: torch.device) -> Any:
    """One cuDNN handle per GPU (created on that GPU)."""
    import cudnn

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _HANDLES:
        with torch.cuda.device(index):
            _HANDLES[index] = cudnn.create_handle()
    return _HANDLES[index]


_GRAPHS: dict[tuple, _Fp8Graph] = {}


@torch.library.custom_op("mirage::fp8_sdpa_e4m3", mutates_args=())
def _fp8_sdpa_e4m3(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor,
                   dv: torch.Tensor) -> torch.Tensor:
    """cuDNN FP8 flash attention on quantized inputs: (B, S, H, D) e4m3 + (1, 1, 1, 1) descales -> e4m3 O with
    descale ``dv``."""
    q8, k8, v8 = q8.contiguous(), k8.contiguous(), v8.contiguous()
    b, s_q, h, d = q8.shape
    key = (b, h, s_q, k8.shape[1], d, q8.device)
    graph = _GRAPHS.get(key)
    if graph is None:
        try:
            with _on(q8.device):  # the graph and its plans on the tensors' GPU, not the current one
                graph = _Fp8Graph(b, h, s_q, k8.shape[1], d, q8.device)
        except Exception as e:  # noqa: BLE001 - cuDNN's "not supported" errors come in several types
            raise RuntimeFailure(f"--fp8: cuDNN cannot build FP8 attention for {h} heads x {s_q} tokens x {d} "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                 "use --fp8 none") from e
        _GRAPHS[key] = graph
    with _on(q8.device):
        return graph(q8, k8, v8, dq, dk, dv)


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@_fp8_sdpa_e4m3.register_fake
def _(q8, k8, v8, dq, dk, dv):  # noqa: ANN001, ANN202 - shape function for torch.compile
    return torch.empty_like(q8, memory_format=torch.contiguous_format)


def fp8_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cuDNN FP8 flash attention. q, k, v: (B, S, H, D), CUDA, bf16/fp16 -> (B, S, H, D) in q.dtype.

    The quantization and dequantization around the kernel are plain tensor ops, so ``torch.compile`` fuses them
    with the neighbouring RoPE and projections; the kernel itself is one opaque custom op."""
    q8, dq = quantize_e4m3(q)
    k8, dk = quantize_e4m3(k)
    v8, dv = quantize_e4m3(v)
    o8 = _fp8_sdpa_e4m3(q8, k8, v8, dq, dk, dv)
    return (o8.float() * (dv * O_HEADROOM)).to(q.dtype)


def check_attention(kind: AttentionKind, device: torch.device, dtype: torch.dtype, *, flag: str = "--fp8") -> None:
    """Raise InputError (one line, with the fix) when ``kind`` cannot run on this device/dtype. ``flag`` names the
    option that asked for it in the message."""
    if kind is AttentionKind.SDPA:
        return
    if device.type != "cuda":
        raise InputError(f"{flag}: FP8 attention needs a CUDA GPU (device is {device}); leave FP8 off on this device")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        raise InputError(f"{flag}: cuDNN FP8 attention needs compute capability 9.0+ (Hopper); this GPU is "
                         f"{major}.{minor}; leave FP8 off on this GPU")
    if dtype != torch.bfloat16:  # the FP8 paths are measured and checked in bfloat16 only
        raise InputError(f"{flag}: needs --dtype bfloat16 (the FP8 path is built and checked for it), not "
                         f"{str(dtype).removeprefix('torch.')}")
    why = cudnn_frontend_available()
    if why is not None:
        raise InputError(f"{flag}: the cuDNN frontend does not import ({why}); "
                         "pip install 'mirage-video[fp8]' (nvidia-cudnn-frontend)")


class SelfAttentionProcessor:
    """Wan self-attention with a chosen kernel; cross-attention (and image context) falls back to diffusers' own
    processor. The math is diffusers' ``WanAttnProcessor`` line for line, so ``attention=sdpa_bshd`` reproduces
    it exactly (tested)."""

    def __init__(self, attention: AttentionFn, fallback: Any):
        self.attention = attention
        self.fallback = fallback

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.add_k_proj is not None:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _rope(query, *rotary_emb), _rope(key, *rotary_emb)
        out = self.attention(query, key, value).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _rope(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved rotary embedding (as diffusers' WanAttnProcessor applies it)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def set_attention(transformer: Any, kind: AttentionKind, attention: AttentionFn | None = None) -> int:
    """Route every self-attention of a Wan/VACE transformer through ``kind`` (``attention`` overrides the kernel,
    for tests). Returns how many attention modules were switched. SDPA leaves the model untouched (0)."""
    if kind is AttentionKind.SDPA and attention is None:
        return 0
    fn = attention or fp8_sdpa
    n = 0
    for module in transformer.modules():
        if type(module).__name__ == "WanAttention" and not module.is_cross_attention:
            current = module.processor
            fallback = current.fallback if isinstance(current, SelfAttentionProcessor) else current
            module.set_processor(SelfAttentionProcessor(fn, fallback))
            n += 1
    if n == 0:
        raise InputError(f"--fp8: the transformer ({type(transformer).__name__}) has no Wan self-attention modules "
                         "to run in FP8; use --fp8 none")
    return n
