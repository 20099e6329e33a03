"""Where a VACE step's time goes, and which attention kernel is fastest on this GPU (issue 8).

    python scripts/gpu_attention.py [--frames 81] [--size 832x480] [--out attention.json] [--skip profile,vae]

1. Attention alone at the step's shape (1 x 12 heads x 32,760 tokens x 128 for 81 frames at 832x480, bf16):
   every SDPA backend PyTorch offers here (flash, cuDNN, memory-efficient), FlashAttention-4 through
   ``torch.nn.attention.activate_flash_attention_impl("FA4")`` when the ``flash_attn`` CuTe package is importable,
   and SageAttention (INT8 QK^T) when ``sageattention`` is; each with its median time, TFLOP/s and relative
   error against the flash output.
2. One transformer step under the profiler: CUDA time split into attention, matrix products and the rest.
3. The Wan VAE decode (bf16) with ``cudnn.benchmark`` off and on.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import torch.nn.functional as F
from gpu_levers import cuda_time, peak_extra, write_report  # scripts/ is on sys.path when run as a script
from torch.nn.attention import SDPBackend, sdpa_kernel


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def attention_kernels(T: int, h: int, w: int, dev: torch.device) -> dict:
    n = T * (h // 2) * (w // 2)
    heads, d = 12, 128
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(3))
    flops = 4 * n * n * d * heads
    out: dict = {"tokens": n, "heads": heads, "head_dim": d}
    ref = None
    for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            with sdpa_kernel(backend):
                ms = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v))
                o = F.scaled_dot_product_attention(q, k, v)
            ref = o if ref is None else ref
            out[name] = {"ms": ms, "tflops": flops / ms / 1e9, "rel_err": rel(o, ref)}
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(name, out[name], flush=True)
    ms = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v))
    out["default"] = {"ms": ms, "tflops": flops / ms / 1e9}
    try:
        from torch.nn.attention import activate_flash_attention_impl, restore_flash_attention_impl

        activate_flash_attention_impl("FA4")
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v)  # first call compiles the CuTe kernel
            ms = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v))
        out["fa4"] = {"ms": ms, "tflops": flops / ms / 1e9, "rel_err": rel(o, ref)}
        restore_flash_attention_impl()
    except Exception as e:  # noqa: BLE001
        out["fa4"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    print("fa4", out["fa4"], flush=True)
    try:
        import cudnn

        from mirage.attention import fp8_sdpa

        out["cudnn_version"] = cudnn.backend_version()
        qb, kb, vb = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # (B, S, H, D) as diffusers passes it
        o = fp8_sdpa(qb, kb, vb).transpose(1, 2)  # first call builds the cuDNN graph
        ms = cuda_time(lambda: fp8_sdpa(qb, kb, vb))
        out["cudnn_fp8"] = {"ms": ms, "tflops": flops / ms / 1e9, "rel_err": rel(o, ref)}
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        out["cudnn_fp8"] = {"error": f"{type(e).__name__}: {e}"[:600]}
    print("cudnn_fp8", out["cudnn_fp8"], flush=True)
    try:
        from sageattention import sageattn

        o = sageattn(q, k, v, tensor_layout="HND", is_causal=False)
        ms = cuda_time(lambda: sageattn(q, k, v, tensor_layout="HND", is_causal=False))
        out["sage"] = {"ms": ms, "tops": flops / ms / 1e9, "rel_err": rel(o, ref)}
    except Exception as e:  # noqa: BLE001
        out["sage"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    print("sage", out["sage"], flush=True)
    return out


def kernel_class(name: str) -> str:
    n = name.lower()
    if any(s in n for s in ("flash", "fmha", "attention", "attn", "sdpa", "cudnn_generated_fort_native_sdpa")):
        return "attention"
    if any(s in n for s in ("gemm", "gemv", "nvjet", "xmma", "cutlass", "matmul", "sm90_")):
        return "matmul"
    return "other"


def profile_step(tr, step) -> dict:
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    by_class: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            us = ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
            by_class[kernel_class(ev.name)] += us / 1e3
            by_kernel[ev.name[:90]] += us / 1e3
    top = sorted(by_kernel.items(), key=lambda kv: -kv[1])[:12]
    return {"ms_by_class": dict(by_class), "top_kernels_ms": top}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="wan-vace-1.3b")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip", default="", help="comma list of: kernels,profile,fp8,compile,vae")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    W, H = (int(v) for v in args.size.split("x"))
    T, h, w = (args.frames - 1) // 4 + 1, H // 8, W // 8
    dev = torch.device("cuda")
    res: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "frames": args.frames,
                 "size": [W, H]}
    if "kernels" not in skip:
        res["attention"] = attention_kernels(T, h, w, dev)
    if "profile" in skip and "vae" in skip:
        write_report(res, args.out)
        return
    from mirage.random_weights import random_components

    comps = random_components(args.preset, device=dev, dtype=torch.bfloat16)
    if "profile" not in skip:
        tr = comps.transformer
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(1, 16, T, h, w, device=dev, dtype=torch.bfloat16, generator=g)
        ctrl = torch.randn(1, 96, T, h, w, device=dev, dtype=torch.bfloat16, generator=g)
        txt = comps.prompt_embeds[None].to(dev, torch.bfloat16)
        t = torch.tensor([500.0], device=dev)
        scale = torch.ones(len(tr.config.vace_layers), device=dev)

        def step():
            with torch.no_grad():
                return tr(hidden_states=x, timestep=t, encoder_hidden_states=txt, control_hidden_states=ctrl,
                          control_hidden_states_scale=scale, return_dict=False)[0]

        res["step_ms"] = cuda_time(step, repeats=3, warmup=1)
        res["step_profile"] = profile_step(tr, step)
        print("step", res["step_ms"], res["step_profile"], flush=True)
        if "fp8" not in skip:
            # eager steps per FP8 mode, then the fastest compiled; errors against the eager bf16 step
            import time

            from mirage.precision import Fp8Mode, apply_fp8

            ref = step()
            for mode in (Fp8Mode.ATTENTION, Fp8Mode.ALL):
                applied = apply_fp8(tr, mode)
                if mode is Fp8Mode.ALL:  # attention was switched already: count only the new linear layers
                    applied = {"linear_layers": applied.linear_layers}
                key = f"fp8_{mode.value}"
                res[f"step_ms_{key}"] = cuda_time(step, repeats=3, warmup=1)
                res[f"step_rel_err_{key}"] = rel(step(), ref)
                res[f"step_profile_{key}"] = profile_step(tr, step)
                print(key, applied, res[f"step_ms_{key}"], res[f"step_rel_err_{key}"], flush=True)
            if "compile" not in skip:
                ctr = torch.compile(tr)
                t0 = time.perf_counter()
                with torch.no_grad():
                    ctr(hidden_states=x, timestep=t, encoder_hidden_states=txt, control_hidden_states=ctrl,
                        control_hidden_states_scale=scale, return_dict=False)
                torch.cuda.synchronize()
                res["compile_s_fp8_all"] = time.perf_counter() - t0

                def cstep():
                    with torch.no_grad():
                        return ctr(hidden_states=x, timestep=t, encoder_hidden_states=txt,
                                   control_hidden_states=ctrl, control_hidden_states_scale=scale,
                                   return_dict=False)[0]

                res["step_ms_fp8_all_compiled"] = cuda_time(cstep, repeats=5, warmup=1)
                res["step_rel_err_fp8_all_compiled"] = rel(cstep(), ref)
                res["step_profile_fp8_all_compiled"] = profile_step(ctr, cstep)
                print("compiled fp8 all", res["step_ms_fp8_all_compiled"], res["step_rel_err_fp8_all_compiled"],
                      res["compile_s_fp8_all"], res["step_profile_fp8_all_compiled"]["ms_by_class"], flush=True)
    if "vae" not in skip:
        vae = comps.vae.model.to(torch.bfloat16)
        z = torch.randn(1, 16, T, h, w, device=dev, dtype=torch.bfloat16)
        with torch.no_grad():
            torch.backends.cudnn.benchmark = False
            res["decode_ms"] = cuda_time(lambda: vae.decode(z), repeats=3, warmup=1)
            torch.backends.cudnn.benchmark = True
            res["decode_ms_cudnn_benchmark"] = cuda_time(lambda: vae.decode(z), repeats=3, warmup=1)
            res["decode_peak_extra_gb_cudnn_benchmark"] = peak_extra(lambda: vae.decode(z)) / 2**30
            torch.backends.cudnn.benchmark = False
        print({k: v for k, v in res.items() if "decode" in k}, flush=True)
    write_report(res, args.out)


if __name__ == "__main__":
    main()
