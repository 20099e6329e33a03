"""How different the latent slots of a static clip are (docs/memory.md, "Latent slots").

    python scripts/slot_kinds.py [--frames 33] [--size 96x64] [--device cpu]

Encodes one random image held still for ``--frames`` frames with the Wan 2.1 VAE at its real architecture
(diffusers' ``AutoencoderKLWan()`` defaults, random weights, float32) and prints, for every latent slot t >= 1, the
largest difference to the last slot and to the slot before, against the slot's mean |latent|; slot 0 is checked
against ``encode_image`` (equal). Random weights show whether the slots settle, not what trained weights give.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from diffusers import AutoencoderKLWan

    from mirage.memory import encode_static_clip
    from mirage.vae import VAE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", default="96x64")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    vae = VAE(AutoencoderKLWan().eval().to(args.device), source="AutoencoderKLWan() random weights")
    img = torch.rand(3, H, W, device=args.device) * 2 - 1
    z = encode_static_clip(vae, img[None], args.frames)[0]  # (T, C, h, w)
    print(f"slot 0 vs encode_image: max |diff| {(z[0] - vae.encode_image(img)).abs().max().item():.3g}")
    for t in range(1, z.shape[0]):
        print(f"slot {t}: max |diff| vs slot 0 {(z[t] - z[0]).abs().max().item():.3f}, vs the last slot "
              f"{(z[t] - z[-1]).abs().max().item():.3f}, vs the slot before {(z[t] - z[t - 1]).abs().max().item():.3f}; "
              f"mean |latent| {z[t].abs().mean().item():.3f}")


if __name__ == "__main__":
    main()
