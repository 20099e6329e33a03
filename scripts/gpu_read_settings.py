"""Time the latent memory read of one chunk for each read setting of docs/fidelity.md (issue 16), with its cache size.

    python scripts/gpu_read_settings.py [--frames 33] [--size 832x480] [--device cuda] [--out reads.json]

For every setting (1-phase bilinear, the default; polyphase 2x2 / 4x4 read with ``closest`` and with ``tent``) a
latent memory of one 832x480 view is built the way ``mirage render`` builds it (C = 16 bf16 tokens, Wan's strides
8 and 4, a feature per latent slot of the chunk: docs/memory.md "Latent slots"; random latents and a plane-plus-noise
depth: the read's cost does not depend on the values; one row without slots shows what they cost), then the
read of all latent frames of a chunk of ``--frames`` pixel frames along the ``orbit`` preset is timed (CUDA events,
median of 20 after 3 warm-ups; eager and as a CUDA graph). Cache bytes are ``memory.stats().bytes``; the RGB cloud
of the same view is one float32 xyz + float32 colour + int64 birth per pixel (32 bytes), as ``mirage bench
fidelity`` reports it. On the CPU the times are wall-clock and only a smoke test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from gpu_levers import capture_graph, cuda_time, write_report  # scripts/ is on sys.path when run as a script


def timed(fn, device: str, repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()``: CUDA events on a GPU (``gpu_levers.cuda_time``), wall-clock on the CPU."""
    if device.startswith("cuda"):
        return cuda_time(fn, repeats=repeats, warmup=warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def main() -> None:
    from mirage.camera import intrinsics_from_fov
    from mirage.latent_space import LatentSpace
    from mirage.memory import MemoryConfig, SplatMode, create_memory, phase_offsets
    from mirage.memory.types import MemoryKind
    from mirage.trajectory import load_trajectory

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33, help="pixel frames of the chunk (4k+1)")
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.lower().split("x"))
    dev, h, w, C = args.device, H // 8, W // 8, 16
    T = (args.frames - 1) // 4 + 1  # latent slots of the chunk
    settings = {
        "bilinear, one slot (before slots)": MemoryConfig(),
        "bilinear (default)": MemoryConfig(),
        "poly2-closest": MemoryConfig(phases=2, splat=SplatMode.CLOSEST),
        "poly2-tent": MemoryConfig(phases=2, splat=SplatMode.TENT),
        "poly4-closest": MemoryConfig(phases=4, splat=SplatMode.CLOSEST),
        "poly4-tent": MemoryConfig(phases=4, splat=SplatMode.TENT),
    }
    K = intrinsics_from_fov(60.0, W, H)
    g = torch.Generator(device="cpu").manual_seed(0)
    depth = (3.0 + torch.rand(H, W, generator=g)).to(dev)
    tj = load_trajectory("orbit", width=W, height=H, K=K, scene_depth=3.5, frames=args.frames)
    Ks, w2cs = tj.K.to(dev).float(), tj.w2c.to(dev).float()
    rgb_bytes = H * W * (3 * 4 + 3 * 4 + 8)
    res: dict = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else dev, "size": [W, H],
                 "frames": args.frames, "latent_channels": C, "dtype": "bfloat16", "rgb_cloud_bytes": rgb_bytes,
                 "settings": {}}
    for name, cfg in settings.items():
        slots = 1 if "one slot" in name else T
        lat = {o: torch.randn(slots, C, h, w, generator=g).to(dev, torch.bfloat16) for o in phase_offsets(8, cfg.phases)}
        mem = create_memory(MemoryKind.LATENT, image=torch.zeros(3, H, W, device=dev), latents=lat[(0, 0)],
                            depth=depth, K=K.to(dev).float(), c2w=torch.eye(4, device=dev),
                            space=LatentSpace(C, 8, 4), config=cfg, dtype=torch.bfloat16, device=dev,
                            phase_latents=lat if cfg.phases > 1 else None)
        st = mem.stats()
        row = {"tokens": st.tokens, "bytes": st.bytes, "rgb_over_latent_bytes": rgb_bytes / st.bytes,
               "latent_frames": int(mem.read(Ks, w2cs).latents.shape[0]),
               "read_ms_eager": timed(lambda m=mem: m.read(Ks, w2cs), dev, args.repeats)}
        if dev.startswith("cuda"):
            try:
                row["read_ms_graph"] = timed(capture_graph(lambda m=mem: m.read(Ks, w2cs))[0].replay, dev, args.repeats)
            except Exception as e:  # noqa: BLE001
                row["read_graph_error"] = f"{type(e).__name__}: {e}"[:300]
        res["settings"][name] = row
        print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    write_report(res, args.out)


if __name__ == "__main__":
    main()
