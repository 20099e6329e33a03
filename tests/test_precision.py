"""FP8 levers (`--fp8`, issue 8) on the CPU: the self-attention processor reproduces diffusers' exactly, the FP8
quantizers and the FP8 linear layer against float64 references, apply_fp8's wiring on a tiny VACE transformer,
and the one-line errors. The cuDNN FP8 kernel itself needs a Hopper GPU: scripts/gpu_smoke.py checks it there."""

from __future__ import annotations

import pytest
import torch

from mirage import attention, precision
from mirage.attention import AttentionKind, SelfAttentionProcessor, quantize_e4m3, sdpa_bshd, set_attention
from mirage.errors import InputError
from mirage.precision import Fp8Linear, Fp8Mode, apply_fp8, check_fp8, parse_fp8, quantize_rows_e4m3


def _tiny_vace():
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(0)
    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0], vace_in_channels=96,
    ).eval()


def _forward(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 3, 8, 16, generator=g)
    ctrl = torch.randn(1, 96, 3, 8, 16, generator=g)
    txt = torch.randn(1, 512, 32, generator=g)
    with torch.no_grad():
        return model(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=txt,
                     control_hidden_states=ctrl, control_hidden_states_scale=torch.ones(1), return_dict=False)[0]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def test_self_attention_processor_reproduces_diffusers_exactly():
    model = _tiny_vace()
    ref = _forward(model)
    seen = []

    def spy(q, k, v):
        seen.append(tuple(q.shape))
        return sdpa_bshd(q, k, v)

    n = set_attention(model, AttentionKind.FP8, attention=spy)
    # 2 blocks + 1 VACE block, one self-attention each; cross-attention stays on diffusers' processor
    assert n == 3 and len(seen) == 0
    out = _forward(model)
    assert len(seen) == 3 and seen[0] == (1, 3 * 4 * 8, 2, 16)  # (B, S, H, D): 3 x (8/2) x (16/2) tokens
    assert torch.equal(out, ref)
    procs = [m.processor for m in model.modules() if type(m).__name__ == "WanAttention"]
    assert sum(isinstance(p, SelfAttentionProcessor) for p in procs) == 3
    # switching again keeps diffusers' processor as the fallback (no processor stacked on a processor)
    set_attention(model, AttentionKind.FP8, attention=sdpa_bshd)
    assert all(not isinstance(p.fallback, SelfAttentionProcessor) for m in model.modules()
               if isinstance(p := getattr(m, "processor", None), SelfAttentionProcessor))
    assert torch.equal(_forward(model), ref)


def test_set_attention_sdpa_is_a_no_op_and_needs_wan_attention():
    model = _tiny_vace()
    assert set_attention(model, AttentionKind.SDPA) == 0
    with pytest.raises(InputError, match="no Wan self-attention modules to run in FP8; use --fp8 none"):
        set_attention(torch.nn.Linear(4, 4), AttentionKind.FP8)


def test_quantize_e4m3_per_tensor():
    x = torch.randn(2, 50, 3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float32) * 7
    x8, descale = quantize_e4m3(x)
    assert x8.dtype == torch.float8_e4m3fn and descale.shape == (1, 1, 1, 1) and descale.dtype == torch.float32
    assert float(x8.float().abs().max()) == 448.0  # the largest magnitude lands on e4m3's largest finite value
    err = rel(x8.float() * descale, x)
    assert 1e-3 < err < 4e-2  # really quantized (3 mantissa bits), and not worse than e4m3 allows
    # bf16 input: the scale stays float32, so there is no systematic gain (a bf16 scale was off by up to 0.4%)
    xb = torch.randn(65536, generator=torch.Generator().manual_seed(2)).clamp(-2.9, 2.9)
    xb[0] = 3.0  # amax 3: scale 149.33, which bf16 would round to 149 (a 0.22% gain error)
    xb = xb.to(torch.bfloat16)
    xb8, db = quantize_e4m3(xb)
    gain = float((xb8.double() * db.double()).flatten() @ xb.double() / (xb.double() @ xb.double()))
    assert abs(gain - 1.0) < 5e-4, gain


def test_fp8_linear_against_float64():
    torch.manual_seed(0)
    for bias in (True, False):
        lin = torch.nn.Linear(256, 128, bias=bias).to(torch.bfloat16)
        x = torch.randn(2, 40, 256, dtype=torch.bfloat16)
        ref = x.double() @ lin.weight.double().t() + (lin.bias.double() if bias else 0.0)
        f = Fp8Linear(lin)
        y = f(x)
        assert y.shape == (2, 40, 128) and y.dtype == torch.bfloat16
        assert f.weight_e4m3.dtype == torch.float8_e4m3fn and f.weight_descale.shape == (1, 128)
        err = rel(y, ref)
        assert 5e-3 < err < 5e-2, err  # e4m3 error, far above the bf16 layer's (~2e-3)
        assert rel(lin(x), ref) < 5e-3
    rows = torch.randn(5, 64) * torch.logspace(-3, 3, 5)[:, None]  # rows 6 decades apart: each its own scale
    r8, rd = quantize_rows_e4m3(rows)
    assert rd.shape == (5, 1) and rel(r8.float() * rd, rows) < 4e-2
    assert all(rel(r8[i].float() * rd[i], rows[i]) < 4e-2 for i in range(5))


def _emulated_fp8_sdpa(q, k, v):
    """What the cuDNN kernel computes, emulated on the CPU: e4m3 Q, K, V, then attention in float."""
    deq = [x8.float() * d for x8, d in (quantize_e4m3(t) for t in (q, k, v))]
    return sdpa_bshd(*deq).to(q.dtype)


def test_apply_fp8_wiring_on_a_tiny_transformer(monkeypatch):
    model = _tiny_vace()
    ref = _forward(model)
    monkeypatch.setattr(attention, "fp8_sdpa", _emulated_fp8_sdpa)  # the CUDA kernel's stand-in
    assert apply_fp8(model, Fp8Mode.NONE) == precision.Fp8Applied(Fp8Mode.NONE, 0, 0)
    a = apply_fp8(model, Fp8Mode.ATTENTION)
    assert (a.attention_modules, a.linear_layers) == (3, 0)
    out_attn = _forward(model)
    assert 1e-4 < rel(out_attn, ref) < 5e-2
    # the tiny model's layers are narrower than MIN_FP8_FEATURES: lower it so they qualify
    monkeypatch.setattr(precision, "MIN_FP8_FEATURES", 16)
    expected = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                and n.split(".")[0] in ("blocks", "vace_blocks") and min(m.in_features, m.out_features) >= 16]
    b = apply_fp8(model, Fp8Mode.ALL)
    assert b.linear_layers == len(expected) > 10
    assert all(isinstance(model.get_submodule(n), Fp8Linear) for n in expected)
    assert isinstance(model.patch_embedding, torch.nn.Conv3d) and isinstance(model.proj_out, torch.nn.Linear)
    out_all = _forward(model)
    assert 1e-3 < rel(out_all, ref) < 1e-1 and not torch.equal(out_all, out_attn)


def test_fp8_errors_are_one_line_with_the_fix():
    assert parse_fp8("ALL") is Fp8Mode.ALL and parse_fp8(Fp8Mode.NONE) is Fp8Mode.NONE
    with pytest.raises(InputError, match=r"--fp8: unknown mode 'fast'; use one of none, attention, all"):
        parse_fp8("fast")
    check_fp8(Fp8Mode.NONE, torch.device("cpu"), torch.float32)  # off: nothing to check
    with pytest.raises(InputError, match=r"--fp8 attention: FP8 attention needs a CUDA GPU \(device is cpu\)"):
        check_fp8(Fp8Mode.ATTENTION, torch.device("cpu"), torch.bfloat16)


def test_render_config_refuses_fp8_where_it_cannot_run():
    from mirage.config import DenoiserKind, PipelineConfig, check_pipeline_config

    with pytest.raises(InputError, match="--fp8 all: FP8 applies to the video transformer; --denoiser none"):
        check_pipeline_config(PipelineConfig(preset="tiny", denoiser=DenoiserKind.NONE, fp8=Fp8Mode.ALL))
    with pytest.raises(InputError, match="--fp8 attention: FP8 attention needs a CUDA GPU"):
        check_pipeline_config(PipelineConfig(preset="tiny", fp8=Fp8Mode.ATTENTION))


def test_cli_fp8_on_cpu_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    from pathlib import Path

    from tests._cli import run_main

    img = Path(__file__).resolve().parents[1] / "examples" / "room" / "image.png"
    code, out, err = run_main(monkeypatch, capsys, "render", img, "--traj", "orbit", "--preset", "tiny",
                              "--device", "cpu", "--fp8", "all", "-o", tmp_path / "o.mp4")
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[0].startswith("error: --fp8 all: FP8 attention needs a CUDA GPU (device is cpu)"), err
    assert not (tmp_path / "o.mp4").exists()


def test_fp8_kernel_build_failure_is_one_line(monkeypatch):
    """When cuDNN cannot build the FP8 graph (old cuDNN, unsupported shape) the run stops with one line naming
    the shape and the fix, not a cuDNN traceback."""
    from mirage.errors import RuntimeFailure

    class Boom(attention._Fp8Graph):
        def __init__(self, *a, **k):
            raise RuntimeError("sdpa fp8 forward is not supported on this architecture\nmore detail")

    monkeypatch.setattr(attention, "_Fp8Graph", Boom)
    q = torch.zeros(1, 8, 2, 16, dtype=torch.float8_e4m3fn)
    one = torch.ones(1, 1, 1, 1)
    with pytest.raises(RuntimeFailure, match=r"--fp8: cuDNN cannot build FP8 attention for 2 heads x 8 tokens x 16 "
                                             r"\(RuntimeError: sdpa fp8 forward is not supported on this "
                                             r"architecture\); use --fp8 none$"):
        attention._fp8_sdpa_e4m3(q, q, q, one, one, one)


def test_fp8_needs_bfloat16_and_no_context_parallel(monkeypatch, capsys):
    from tests._cli import run_main

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(InputError, match=r"--fp8 all: needs --dtype bfloat16 \(the FP8 path is built and checked "
                                         r"for it\), not float16"):
        check_fp8(Fp8Mode.ALL, torch.device("cuda"), torch.float16)
    code, _, err = run_main(monkeypatch, capsys, "bench", "--context-parallel", "--fp8", "attention", "--device", "cpu")
    assert code == 2 and err.strip().splitlines()[0] == (
        "error: --context-parallel with --fp8 attention: FP8 attention bypasses the split attention; drop --fp8"), err


def test_fp8_all_on_a_transformer_loaded_like_real_weights(monkeypatch, tmp_path):
    """Real weights load in bf16 with diffusers' float32-kept modules (norms, time embedder); --fp8 all must run
    on that mixed model too (the GPU smoke test builds an all-bf16 one)."""
    from mirage import hub

    comps = hub.load_components(hub.Preset.TINY, tiny_root=tmp_path, dtype=torch.bfloat16, need_depth=False)
    model = comps.transformer
    assert {p.dtype for p in model.parameters()} == {torch.float32, torch.bfloat16}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 8, 16, generator=g, dtype=torch.bfloat16)
    ctrl = torch.randn(1, 96, 3, 8, 16, generator=g, dtype=torch.bfloat16)
    txt = torch.randn(1, 512, model.config.text_dim, generator=g, dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            return model(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=txt,
                         control_hidden_states=ctrl, control_hidden_states_scale=torch.ones(1, dtype=torch.bfloat16),
                         return_dict=False)[0]

    ref = fwd()
    monkeypatch.setattr(attention, "fp8_sdpa", _emulated_fp8_sdpa)
    monkeypatch.setattr(precision, "MIN_FP8_FEATURES", 16)
    applied = apply_fp8(model, Fp8Mode.ALL)
    assert applied.attention_modules == 3 and applied.linear_layers > 10
    out = fwd()
    assert out.dtype == ref.dtype and torch.isfinite(out).all()
    assert 1e-3 < rel(out, ref) < 1.5e-1


def test_dtype_enums_parse_and_map_to_torch():
    from mirage.dtypes import DType, VaeDType, parse_dtype, parse_vae_dtype

    assert [d.torch_dtype for d in DType] == [torch.float32, torch.bfloat16, torch.float16]
    assert parse_dtype("bfloat16") is DType.BFLOAT16 and parse_vae_dtype("model") is VaeDType.MODEL
    with pytest.raises(InputError, match=r"^--dtype: 'float8' is not one of float32, bfloat16, float16$"):
        parse_dtype("float8")
    with pytest.raises(InputError, match=r"^vae_dtype: 'auto' is not one of float32, model$"):
        parse_vae_dtype("auto", "vae_dtype")  # "auto" is the CLI's to resolve, never the library's
