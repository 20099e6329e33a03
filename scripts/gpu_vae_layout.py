"""Wan VAE decode of one 81-frame 832x480 chunk (bf16, random weights): NCDHW vs channels-last-3d convs.

    python scripts/gpu_vae_layout.py [--out vae_layout.json]
"""

from __future__ import annotations

import argparse

import torch
from gpu_levers import cuda_time, write_report  # scripts/ is on sys.path when run as a script


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from diffusers import AutoencoderKLWan

    dev = torch.device("cuda")
    torch.manual_seed(0)
    vae = AutoencoderKLWan().to(dev, torch.bfloat16).eval()
    z = torch.randn(1, 16, 21, 60, 104, device=dev, dtype=torch.bfloat16)
    res = {"gpu": torch.cuda.get_device_name()}
    with torch.no_grad():
        ref = vae.decode(z).sample
        res["decode_ms_ncdhw"] = cuda_time(lambda: vae.decode(z), repeats=3, warmup=1)
        for m in vae.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.data = m.weight.data.to(memory_format=torch.channels_last_3d)
        zc = z.to(memory_format=torch.channels_last_3d)
        out = vae.decode(zc).sample
        res["decode_ms_channels_last_3d"] = cuda_time(lambda: vae.decode(zc), repeats=3, warmup=1)
        res["rel_err"] = float((out.float() - ref.float()).norm() / ref.float().norm())
    write_report(res, args.out)


if __name__ == "__main__":
    main()
