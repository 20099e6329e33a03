"""Peak host memory (RSS) of loading a sharded Wan VACE transformer through mirage's loader (issue 13).

    python scripts/load_memory.py --preset wan-vace-14b --shards 13 --dtype bfloat16 --device cuda --dir /tmp/ckpt
    python scripts/load_memory.py --preset wan-vace-1.3b --shards 2 --dtype bfloat16 --device cpu --dir /tmp/ckpt

1. In a child process: builds the transformer at the preset's real architecture (``mirage.random_weights``) with
   random weights, in ``--save-dtype``, and saves it with diffusers' ``save_pretrained`` split into ``--shards``
   files (the real repos: 2 for 1.3B, 13 for 14B).
2. For each ``--device``, in a fresh child process: loads it with ``mirage.hub.loaders.load_diffusers`` (diffusers'
   ``from_pretrained`` with accelerate, after mirage's per-shard header checks) in ``--dtype`` and reads the peak
   RSS (``VmHWM``; file pages of memory-mapped shards count too) before and after.

Prints one JSON object: the checkpoint's bytes, its largest shard, the model's bytes in ``--dtype`` and, per device,
the peak RSS of the process and the rise over the process before loading.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def build(args: argparse.Namespace) -> None:
    import torch
    from diffusers import WanVACETransformer3DModel

    from mirage.random_weights import TRANSFORMER_CONFIGS

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = WanVACETransformer3DModel(**TRANSFORMER_CONFIGS[args.preset]).to(getattr(torch, args.save_dtype))
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(args.dir, max_shard_size=f"{int(n / args.shards * 1.05 / 1e6)}MB", safe_serialization=True)


def load(args: argparse.Namespace) -> None:
    import torch

    from mirage.hub.loaders import load_diffusers
    from mirage.hub.presets import Component
    from mirage.hub.sources import ResolvedSource

    before = _vm("VmHWM")
    src = ResolvedSource(Component.TRANSFORMER, str(Path(args.dir).resolve()), None, None, True)
    model = load_diffusers(src, device=args.device, dtype=getattr(torch, args.dtype),
                           allowed_classes=("WanVACETransformer3DModel",), preset=None)
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"device": args.device, "peak_rss_bytes": _vm("VmHWM"), "rss_before_bytes": before,
                      "rise_bytes": _vm("VmHWM") - before, "model_bytes": n,
                      "on": str(next(model.parameters()).device)}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="wan-vace-1.3b")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--save-dtype", default="bfloat16")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cpu", help="comma-separated: cpu,cuda")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--step", default="all", choices=["all", "build", "load"])
    args = ap.parse_args()
    if args.step == "build":
        build(args)
        return 0
    if args.step == "load":
        load(args)
        return 0
    me = [sys.executable, __file__, "--preset", args.preset, "--shards", str(args.shards), "--save-dtype",
          args.save_dtype, "--dtype", args.dtype, "--dir", args.dir]
    if not (Path(args.dir) / "config.json").is_file():
        subprocess.run(me + ["--step", "build"], check=True)
    files = sorted(Path(args.dir).glob("*.safetensors"))
    out = {"preset": args.preset, "shards": len(files), "checkpoint_bytes": sum(f.stat().st_size for f in files),
           "largest_shard_bytes": max(f.stat().st_size for f in files), "save_dtype": args.save_dtype,
           "dtype": args.dtype, "loads": []}
    for dev in args.device.split(","):
        r = subprocess.run(me + ["--step", "load", "--device", dev], check=True, capture_output=True, text=True,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        out["loads"].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
