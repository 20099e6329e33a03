"""How long the host takes to read the input image: PIL's decode alone, then mirage's whole read (to the CPU).

    python scripts/time_image_read.py [IMAGE] [--repeats 5]

Prints the median of the calls after the first (the first pays imports and file caching), in ms. Default image:
the example scene's (832x480 PNG), what ``mirage bench`` renders.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    from PIL import Image

    from mirage.bench import example_inputs
    from mirage.video import read_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    path = args.image or str(example_inputs()[0])

    def decode() -> None:
        with Image.open(path) as im:
            im.load()

    for name, fn in (("PIL decode", decode), ("read_image", lambda: read_image(path))):
        times = []
        for _ in range(args.repeats + 1):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        print(f"{name}: {statistics.median(times[1:]):.1f} ms")


if __name__ == "__main__":
    main()
