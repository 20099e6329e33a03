"""Measure speed levers of the GPU path one at a time (issue 8), on random weights at the real architectures.

    python scripts/gpu_levers.py [--preset wan-vace-1.3b] [--frames 81] [--size 832x480] [--out levers.json]

Times (CUDA events, median of repeats after warm-up), one line each:
- one transformer step (1 forward, no CFG) per attention backend (native SDPA / cuDNN) and with torch.compile;
- the Wan VAE decode of the chunk in float32 and bfloat16 (and tiled);
- the Wan VAE encode of the chunk (what the RGB baseline pays per read);
- the latent memory read of all latent frames of the chunk from a one-frame memory, eager and as a CUDA graph,
  and again after 10 write-backs along the `tour` preset;
plus each one's peak VRAM above the resident weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def cuda_time(fn, repeats=5, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64 on the CPU."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def write_report(res: dict, out: str | None) -> None:
    """Print ``res`` as JSON, and write it to ``out`` when given (the scripts' ``--out``)."""
    print(json.dumps(res, indent=1))
    if out:
        with open(out, "w") as f:
            json.dump(res, f, indent=1)


def capture_graph(fn, warmup: int = 3):
    """Warm ``fn`` up on a side stream, then capture it into a CUDA graph. Returns (graph, output): each
    ``graph.replay()`` recomputes ``output`` in place."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def fov_head_output(est, frames: torch.Tensor) -> torch.Tensor:
    """Depth Pro's raw ``field_of_view`` output (B,) for ``frames`` (B, 3, H, W) in [-1, 1], the FoV head on
    (``est``: a :class:`mirage.depth.DepthEstimator`)."""
    with torch.inference_mode():
        return est.model(pixel_values=est.pixel_values(frames)).field_of_view.float()


def peak_extra(fn):
    """Peak VRAM of ``fn()`` above what was allocated before it, bytes (the render's ``peak_vram_extra_bytes``)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="wan-vace-1.3b")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip", default="", help="comma list of: compile,cudnn,vae,read")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    W, H = (int(v) for v in args.size.split("x"))
    dev = torch.device("cuda")
    from mirage.random_weights import random_components

    comps = random_components(args.preset, device=dev, dtype=torch.bfloat16)
    tr = comps.transformer
    T, h, w = (args.frames - 1) // 4 + 1, H // 8, W // 8
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(1, 16, T, h, w, device=dev, dtype=torch.bfloat16, generator=g)
    ctrl = torch.randn(1, 96, T, h, w, device=dev, dtype=torch.bfloat16, generator=g)
    txt = comps.prompt_embeds[None].to(dev, torch.bfloat16)
    t = torch.tensor([500.0], device=dev)
    scale = torch.ones(len(tr.config.vace_layers), device=dev)
    res = {"preset": args.preset, "frames": args.frames, "size": [W, H], "gpu": torch.cuda.get_device_name()}

    def step(model):
        with torch.no_grad():
            return model(hidden_states=x, timestep=t, encoder_hidden_states=txt, control_hidden_states=ctrl,
                         control_hidden_states_scale=scale, return_dict=False)[0]

    res["step_ms_native"] = cuda_time(lambda: step(tr))
    res["step_peak_extra_gb"] = peak_extra(lambda: step(tr)) / 2**30
    print("step native sdpa", res["step_ms_native"], flush=True)
    if "cudnn" not in skip:
        tr.set_attention_backend("_native_cudnn")
        res["step_ms_cudnn"] = cuda_time(lambda: step(tr))
        print("step cudnn", res["step_ms_cudnn"], flush=True)
    if "compile" not in skip:
        best = "_native_cudnn" if res.get("step_ms_cudnn", 1e9) < res["step_ms_native"] else "native"
        tr.set_attention_backend(best)
        ctr = torch.compile(tr)
        t0 = time.perf_counter()
        step(ctr)
        torch.cuda.synchronize()
        res["compile_s"] = time.perf_counter() - t0
        res["step_ms_compiled"] = cuda_time(lambda: step(ctr))
        res["compiled_backend"] = best
        print("step compiled", best, res["step_ms_compiled"], "compile s", res["compile_s"], flush=True)
    torch.cuda.empty_cache()
    if "vae" not in skip:
        vae = comps.vae.model
        z = torch.randn(1, 16, T, h, w, device=dev, generator=g)
        video = torch.rand(1, 3, args.frames, H, W, device=dev, generator=g) * 2 - 1
        with torch.no_grad():
            res["decode_ms_fp32"] = cuda_time(lambda: vae.decode(z), repeats=3, warmup=1)
            res["decode_peak_extra_gb_fp32"] = peak_extra(lambda: vae.decode(z)) / 2**30
            res["encode_ms_fp32"] = cuda_time(lambda: vae.encode(video), repeats=3, warmup=1)
            vae.to(torch.bfloat16)
            zb, vb = z.bfloat16(), video.bfloat16()
            res["decode_ms_bf16"] = cuda_time(lambda: vae.decode(zb), repeats=3, warmup=1)
            res["decode_peak_extra_gb_bf16"] = peak_extra(lambda: vae.decode(zb)) / 2**30
            res["encode_ms_bf16"] = cuda_time(lambda: vae.encode(vb), repeats=3, warmup=1)
            vae.enable_tiling()
            res["decode_ms_bf16_tiled"] = cuda_time(lambda: vae.decode(zb), repeats=3, warmup=1)
            res["decode_peak_extra_gb_bf16_tiled"] = peak_extra(lambda: vae.decode(zb)) / 2**30
        print({k: v for k, v in res.items() if "code" in k}, flush=True)
    if "read" not in skip:
        from mirage.camera import intrinsics_from_fov
        from mirage.latent_space import LatentSpace
        from mirage.memory import MemoryConfig, create_memory
        from mirage.memory.types import MemoryKind
        from mirage.trajectory import load_trajectory

        K = intrinsics_from_fov(60.0, W, H)
        lat = torch.randn(16, h, w, device=dev, dtype=torch.bfloat16)
        depth = torch.full((H, W), 3.0, device=dev) + torch.rand(H, W, device=dev)
        mem = create_memory(MemoryKind.LATENT, image=torch.zeros(3, H, W, device=dev), latents=lat, depth=depth,
                            K=K.to(dev).float(), c2w=torch.eye(4, device=dev), space=LatentSpace(16, 8, 4),
                            config=MemoryConfig(), dtype=torch.bfloat16, device=dev)
        tj = load_trajectory("orbit", width=W, height=H, K=K, scene_depth=3.5, frames=args.frames)
        Ks, w2cs = tj.K.to(dev).float(), tj.w2c.to(dev).float()
        res["read_ms_eager"] = cuda_time(lambda: mem.read(Ks, w2cs), repeats=20, warmup=3)
        res["read_peak_extra_mb"] = peak_extra(lambda: mem.read(Ks, w2cs)) / 2**20
        try:
            res["read_ms_graph"] = cuda_time(capture_graph(lambda: mem.read(Ks, w2cs))[0].replay, repeats=20, warmup=3)
        except Exception as e:  # noqa: BLE001
            res["read_graph_error"] = f"{type(e).__name__}: {e}"[:300]
        # the same read after 10 write-backs along a long path (each chunk writes its revealed cells)
        from mirage.pipeline import dilate, plan_chunks

        n_chunks = 10
        long = load_trajectory("tour", width=W, height=H, K=K, scene_depth=3.5, frames=80 * n_chunks + 1)
        LK, Lw2c, Lc2w = long.K.to(dev).float(), long.w2c.to(dev).float(), long.c2w.to(dev).float()
        for a, b in plan_chunks(long.num_frames, 81)[:n_chunks]:
            r = mem.read(LK[a:b], Lw2c[a:b])
            T = r.latents.shape[0]
            depth_w = torch.full((T, H, W), 3.5, device=dev) + torch.rand(T, H, W, device=dev)
            mem.write(frames=torch.zeros(b - a, 3, H, W, device=dev),
                      latents=torch.randn(T, 16, h, w, device=dev, dtype=torch.bfloat16), depth=depth_w,
                      K=LK[a:b], c2w=Lc2w[a:b], region=dilate(r.holes, 1))
        st = mem.stats()
        res["after_writebacks"] = {"writes": n_chunks, "tokens": st.tokens, "bytes": st.bytes}
        res["read_ms_eager_10wb"] = cuda_time(lambda: mem.read(Ks, w2cs), repeats=20, warmup=3)
        try:
            res["read_ms_graph_10wb"] = cuda_time(capture_graph(lambda: mem.read(Ks, w2cs))[0].replay, repeats=20, warmup=3)
        except Exception as e:  # noqa: BLE001
            res["read_graph_10wb_error"] = f"{type(e).__name__}: {e}"[:300]
        print({k: v for k, v in res.items() if k.startswith("read") or k.startswith("after")}, flush=True)
    write_report(res, args.out)


if __name__ == "__main__":
    main()
