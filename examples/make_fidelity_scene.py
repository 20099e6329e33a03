"""Write the fidelity benchmark's example scene, examples/fidelity/ (exactly known geometry, mirage/synthetic.py).

    python examples/make_fidelity_scene.py        # writes examples/fidelity/{source.png, source_depth.png,
                                                  #   targets/*.png, cameras.json}

The analytic room seen from the origin (source, 256x160, horizontal FoV 60 degrees) and from five target cameras
(mirage.fidelity.synthetic_targets: identity, a sub-stride shift, truck, push-in, pedestal). The source depth is
the true z-depth (16-bit PNG, millimetres) and the targets are the true renders. Re-running it reproduces the files.
Used by `mirage bench fidelity` (its default scene); see docs/fidelity.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mirage.fidelity import make_synthetic_scene, write_scene

WIDTH, HEIGHT = 256, 160


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "fidelity")
    args = ap.parse_args()
    scene = make_synthetic_scene(WIDTH, HEIGHT)
    write_scene(args.out, scene)
    print(f"wrote {args.out} ({WIDTH}x{HEIGHT}, {len(scene.names)} targets: {', '.join(scene.names)})")


if __name__ == "__main__":
    main()
