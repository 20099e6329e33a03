"""Does a small read-back wait behind a chunk's frames on their way to the host? (BENCHMARKS.md, ninth session)

    python scripts/gpu_copy_wait.py [--frames 33] [--repeats 10] [--out F.json]

A render copies each chunk's decoded frames (33 x 3 x 480 x 832 float32, 158 MB) to pinned host memory on a side
stream (``mirage.video.HostFrames``). This times, on an idle GPU, the host's wait for one scalar read back from the
compute stream (``.item()``, and a non-blocking copy to pinned memory waited on by an event, as
``mirage.depth.scene_depth`` does), with no copy in flight and right after the frames' copy was queued; and the
copy alone. If the scalar waits about as long as the copy, read-backs queue behind it.

It also times ``mirage.video.to_uint8`` on the host for an 81-frame video against the out-of-place chain it replaced.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from gpu_levers import write_report  # scripts/ is on sys.path when run as a script

    from mirage.video import to_uint8

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    frames = torch.randn(args.frames, 3, 480, 832, device=dev)
    host = torch.empty(frames.shape, pin_memory=True)
    scalar = torch.ones((), device=dev)
    pinned = torch.empty((), pin_memory=True)
    side = torch.cuda.Stream(dev)

    def queue_copy() -> None:
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            host.copy_(frames, non_blocking=True)

    def item() -> None:
        scalar.item()

    def pinned_event() -> None:
        pinned.copy_(scalar, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        done.synchronize()

    def timed(fn, with_copy: bool) -> float:
        times = []
        for _ in range(args.repeats + 2):
            torch.cuda.synchronize(dev)
            if with_copy:
                queue_copy()
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            torch.cuda.synchronize(dev)
        return statistics.median(times[2:])

    def copy_alone() -> None:
        queue_copy()
        side.synchronize()

    res = {
        "frames_mb": frames.numel() * 4 / 1e6,
        "copy_alone_ms": timed(copy_alone, False),
        "item_ms": timed(item, False),
        "item_behind_copy_ms": timed(item, True),
        "pinned_event_ms": timed(pinned_event, False),
        "pinned_event_behind_copy_ms": timed(pinned_event, True),
    }
    video = torch.rand(81, 3, 480, 832) * 2.2 - 1.1

    def out_of_place(x: torch.Tensor):
        y = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    for name, fn in (("to_uint8_out_of_place_ms", out_of_place), ("to_uint8_ms", to_uint8)):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn(video)
            times.append((time.perf_counter() - t) * 1e3)
        res[name] = statistics.median(times[1:])
    write_report(res, args.out)


if __name__ == "__main__":
    main()
