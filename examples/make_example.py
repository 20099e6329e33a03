"""Render the example scene shipped in examples/room/ (exactly known geometry, see mirage/synthetic.py).

    python examples/make_example.py            # writes examples/room/{image.png, depth.png}

image.png: the input photo (832x480, horizontal FoV 60 degrees, camera at the world origin, OpenCV axes);
depth.png: its true z-depth as a 16-bit PNG in millimetres. Re-running it reproduces the files bit for bit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mirage.camera import intrinsics_from_fov
from mirage.io import atomic_path
from mirage.synthetic import example_room, render_scene
from mirage.video import write_png

WIDTH, HEIGHT, FOV_X_DEG = 832, 480, 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "room")
    args = ap.parse_args()
    K = intrinsics_from_fov(FOV_X_DEG, WIDTH, HEIGHT)
    image, depth = render_scene(example_room(), K, torch.eye(4, dtype=torch.float64), WIDTH, HEIGHT)
    args.out.mkdir(parents=True, exist_ok=True)
    write_png(args.out / "image.png", image)
    mm = np.clip(np.round(depth.numpy() * 1000.0), 0, 65535).astype(np.uint16)
    with atomic_path(args.out / "depth.png") as tmp:
        Image.fromarray(mm).save(tmp, format="PNG")
    print(f"wrote {args.out}/image.png and depth.png ({WIDTH}x{HEIGHT}, fov {FOV_X_DEG} deg)")


if __name__ == "__main__":
    main()
