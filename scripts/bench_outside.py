"""Issue 15's "everything that is not the transformer under 2%", read from `mirage bench --json` files.

    python scripts/bench_outside.py BENCH.json [BENCH.json ...]

For every timed run: its total, the time outside the models (total minus the stages that run the transformer, the
VAE and the depth model: ``depth``, ``encode``, ``denoise``, ``decode``, ``decode_reads``, ``write_depth``) in ms
and as a share of the total, the time outside every stage (``unstaged_ms`` summed), and its parts of 0.5 ms or more.
"""

from __future__ import annotations

import json
import sys

MODEL_STAGES = ("depth", "encode", "denoise", "decode", "decode_reads", "write_depth")


def outside(run: dict) -> dict:
    """One run of a bench row: total, outside-the-models ms and %, unstaged ms (and its parts >= 0.5 ms)."""
    total = run["total_ms"]
    models = sum(run["stages_ms"].get(k, 0.0) for k in MODEL_STAGES)
    unstaged = run.get("unstaged_ms", {})
    return {"total_ms": total, "outside_ms": total - models, "outside_pct": 100 * (total - models) / total,
            "unstaged_ms": sum(unstaged.values()), "unstaged_parts": {k: v for k, v in unstaged.items() if v >= 0.5}}


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        for row in report["rows"]:
            for run in row["runs"]:
                o = outside(run)
                parts = ", ".join(f"{k} {v:.1f}" for k, v in o["unstaged_parts"].items())
                print(f"{path}: {row['memory']} {row['steps']} steps: total {o['total_ms']:.0f} ms, outside the models "
                      f"{o['outside_ms']:.1f} ms = {o['outside_pct']:.2f}%, unstaged {o['unstaged_ms']:.1f} ms ({parts})")


if __name__ == "__main__":
    main(sys.argv[1:])
