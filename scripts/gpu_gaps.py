"""Where the GPU sits idle during a render, and what the host is doing then: a chrome trace read back.

A render whose models keep the GPU busy loses time only where the GPU has nothing queued: the host reads a file,
waits for a read-back and then launches the next op, or runs Python between two stages. ``idle_gaps`` takes the
events of ``torch.profiler``'s chrome trace (``export_chrome_trace``; a run with ``with_stack=True`` adds the
``python_function`` events), finds the intervals where no kernel, copy or memset runs on any stream inside the
render's window, and charges each idle microsecond to what the render thread was inside at that moment:

- the innermost ``stage:NAME`` range (a StageTimer stage, ``unstaged`` outside every one);
- the innermost Python function of mirage (``mirage/...py(LINE): name``), when the trace has them, and the
  innermost one of the pipeline's own files (the render's step);
- the innermost torch op or CUDA runtime call (``aten::item``, ``cudaStreamSynchronize``...), or "python" when the
  thread runs no op.

Timestamps are the trace's microseconds. Host times under the profiler are inflated (each op costs more), so the idle
time is an upper bound; the ranking is what the pass is for.

Read a trace again without a GPU (``gpu_overhead.py --only gaps --keep-trace T.json.gz`` keeps one):

    python scripts/gpu_gaps.py T.json.gz

prints :func:`idle_gaps` and :func:`idle_between_stages` of it.
"""

from __future__ import annotations

import bisect
import gzip
import json
import sys

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_OP_CATS = ("cpu_op", "cuda_runtime", "cuda_driver")
#: The files whose functions are a render's steps (``by_pipeline_step``: the innermost of them).
PIPELINE_FILES = ("mirage/pipeline.py", "mirage/world.py")


def busy_intervals(events: list[dict]) -> list[tuple[float, float]]:
    """The merged (start, end) intervals, us, in which any device event (kernel, copy, memset) runs."""
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                   if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS)
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def idle_intervals(busy: list[tuple[float, float]], window: tuple[float, float]) -> list[tuple[float, float]]:
    """The complement of ``busy`` (merged, sorted) inside ``window``: (start, end) us."""
    lo, hi = window
    out, t = [], lo
    for a, b in busy:
        if b <= t:
            continue
        if a >= hi:
            break
        if a > t:
            out.append((t, a))
        t = max(t, b)
    if t < hi:
        out.append((t, hi))
    return out


def innermost_at(spans: list[tuple[float, float, str]], times: list[float]) -> list[str | None]:
    """For each time of the sorted ``times``, the name of the innermost span holding it (spans properly nested, as
    one thread's are), or None."""
    evs = sorted(spans, key=lambda s: (s[0], -s[1]))
    out: list[str | None] = []
    stack: list[tuple[float, float, str]] = []
    k = 0
    for t in times:
        while k < len(evs) and evs[k][0] <= t:
            while stack and stack[-1][1] <= evs[k][0]:
                stack.pop()
            stack.append(evs[k])
            k += 1
        while stack and stack[-1][1] < t:
            stack.pop()
        out.append(stack[-1][2] if stack else None)
    return out


def _samples(gaps: list[tuple[float, float]], step_us: float) -> tuple[list[float], list[float]]:
    """Sample times through the gaps (sorted) and the idle microseconds each stands for."""
    times, weights = [], []
    for a, b in gaps:
        t = a
        while t < b:
            w = min(step_us, b - t)
            times.append(t + w / 2)
            weights.append(w)
            t += step_us
    return times, weights


def _mirage_frame(name: str) -> bool:
    return "mirage/" in name.replace("\\", "/") and "scripts/" not in name


def idle_gaps(events: list[dict], *, window_name: str = "stage:unstaged", step_us: float = 10.0,
              top: int = 25) -> dict:
    """The GPU's idle time inside the render and what the render thread was doing then (see the module docstring).

    Args:
        events: the ``traceEvents`` of a chrome trace. window_name: the host range that holds the render (its
            thread is the render thread). step_us: the sampling step through the gaps.
    Returns:
        {"window_ms", "busy_ms", "idle_ms", "gaps": count of gaps over 50 us, "longest_gaps": [[start ms from the
        window's start, ms, stage, mirage function, op], ...], "by_stage", "by_function", "by_pipeline_step", "by_op": {name: idle ms}}.
    """
    xs = [e for e in events if e.get("ph") == "X"]
    w = _window(xs, window_name)
    tid, pid = w.get("tid"), w.get("pid")
    lo, hi = float(w["ts"]), float(w["ts"]) + float(w["dur"])
    busy = busy_intervals(xs)
    gaps = idle_intervals(busy, (lo, hi))
    thread = [e for e in xs if e.get("tid") == tid and e.get("pid") == pid]

    def spans(pred) -> list[tuple[float, float, str]]:
        return [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)), e["name"]) for e in thread if pred(e)]

    stage_spans = spans(lambda e: str(e.get("name", "")).startswith("stage:"))
    fn_spans = spans(lambda e: e.get("cat") == "python_function" and _mirage_frame(str(e.get("name", ""))))
    step_spans = [s for s in fn_spans if any(f in s[2].replace("\\", "/") for f in PIPELINE_FILES)]
    op_spans = spans(lambda e: e.get("cat") in HOST_OP_CATS)
    times, weights = _samples(gaps, step_us)
    stage = innermost_at(stage_spans, times)
    fn = innermost_at(fn_spans, times)
    pipeline_step = innermost_at(step_spans, times)
    op = innermost_at(op_spans, times)

    def total(keys: list[str | None], default: str) -> dict[str, float]:
        acc: dict[str, float] = {}
        for k, wt in zip(keys, weights, strict=True):
            k = k or default
            acc[k] = acc.get(k, 0.0) + wt / 1e3
        return {k: round(v, 2) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])[:top]}

    longest = []
    for a, b in sorted(gaps, key=lambda g: g[0] - g[1])[:top]:
        i = min(bisect.bisect_left(times, a), len(times) - 1)  # the gap's first sample
        longest.append([round((a - lo) / 1e3, 2), round((b - a) / 1e3, 2), (stage[i] or "stage:unstaged")[6:],
                        fn[i] or "-", op[i] or "python"])
    busy_in = sum(min(b, hi) - max(a, lo) for a, b in busy if b > lo and a < hi)
    return {
        "window_ms": round((hi - lo) / 1e3, 1), "busy_ms": round(busy_in / 1e3, 1),
        "idle_ms": round(sum(b - a for a, b in gaps) / 1e3, 1), "gaps": sum(1 for a, b in gaps if b - a > 50),
        "has_python_functions": bool(fn_spans),
        "longest_gaps": longest,
        "by_stage": {k[6:]: v for k, v in total(stage, "stage:unstaged").items()},
        "by_function": total(fn, "-"), "by_pipeline_step": total(pipeline_step, "-"), "by_op": total(op, "python"),
    }


def _window(events: list[dict], window_name: str) -> dict:
    win = [e for e in events if e.get("ph") == "X" and e.get("name") == window_name]
    if not win:
        raise ValueError(f"no '{window_name}' range in the trace")
    return max(win, key=lambda e: float(e.get("dur", 0.0)))


def idle_between_stages(events: list[dict], *, window_name: str = "stage:unstaged") -> dict[str, float]:
    """The GPU's idle ms in the host's time between one stage range and the next (outside every stage), keyed by the
    stage that follows (``"-> encode"``), plus ``"total"``."""
    xs = [e for e in events if e.get("ph") == "X"]
    w = _window(xs, window_name)
    lo, hi = float(w["ts"]), float(w["ts"]) + float(w["dur"])
    gaps = idle_intervals(busy_intervals(xs), (lo, hi))
    stages = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)), e["name"][6:]) for e in xs
                    if e.get("tid") == w.get("tid") and e.get("pid") == w.get("pid")
                    and str(e.get("name", "")).startswith("stage:") and e["name"] != window_name)
    out: dict[str, float] = {}
    prev_end = None
    for a, b, name in stages:
        if prev_end is not None and a > prev_end:
            idle = sum(max(0.0, min(a, y) - max(prev_end, x)) for x, y in gaps) / 1e3
            out[f"-> {name}"] = out.get(f"-> {name}", 0.0) + idle
        prev_end = b if prev_end is None else max(prev_end, b)
    out["total"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    path = sys.argv[1]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        events = json.load(f)["traceEvents"]
    print(json.dumps({"idle_gaps": idle_gaps(events), "idle_between_stages": idle_between_stages(events)}, indent=1))


if __name__ == "__main__":
    main()
