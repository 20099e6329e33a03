"""scripts/gpu_gaps.py: the GPU's idle time in a render and what the host does then, read from torch.profiler's own
chrome trace (the CPU part is real; the device spans are added by hand, as a CUDA trace would hold them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("gpu_gaps", Path(__file__).parents[1] / "scripts" / "gpu_gaps.py")
gpu_gaps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_gaps)


def test_idle_intervals_are_the_window_minus_the_merged_busy_spans():
    events = [{"ph": "X", "cat": "kernel", "name": "k", "ts": a, "dur": d} for a, d in
              [(10, 5), (12, 10), (40, 5), (100, 50)]] + [{"ph": "X", "cat": "cpu_op", "name": "h", "ts": 0, "dur": 5}]
    busy = gpu_gaps.busy_intervals(events)
    assert busy == [(10, 22), (40, 45), (100, 150)]
    assert gpu_gaps.idle_intervals(busy, (0, 120)) == [(0, 10), (22, 40), (45, 100)]
    assert gpu_gaps.idle_intervals(busy, (15, 42)) == [(22, 40)]


def test_innermost_span_at_each_time():
    spans = [(0, 100, "outer"), (10, 20, "a"), (12, 14, "a.inner"), (30, 40, "b")]
    assert gpu_gaps.innermost_at(spans, [5, 11, 13, 25, 35, 150]) == ["outer", "a", "a.inner", "outer", "b", None]


def test_idle_time_is_charged_to_the_stage_and_mirage_function_the_host_is_in(tmp_path):
    """A real torch.profiler trace (with stacks) of mirage code on the CPU; one device span added by hand covers the
    'stage:scores' range, so the idle time left is the rest of the window, spent in mirage's blur elsewhere."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from mirage.scores import ssim

    a = torch.rand(2, 3, 96, 96) * 2 - 1
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        with record_function("stage:unstaged"):
            ssim(a, a.flip(-1))  # idle GPU: charged to mirage/scores.py
            with record_function("stage:scores"):
                ssim(a, a.flip(-2))  # covered by the hand-made kernel below
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    scores = next(e for e in events if e.get("name") == "stage:scores")
    events.append({"ph": "X", "cat": "kernel", "name": "k", "ts": scores["ts"], "dur": scores["dur"],
                   "pid": 1, "tid": 7})
    out = gpu_gaps.idle_gaps(events, step_us=2.0)
    window = next(e for e in events if e.get("name") == "stage:unstaged")
    assert out["has_python_functions"]
    assert out["idle_ms"] == pytest.approx((window["dur"] - scores["dur"]) / 1e3, abs=0.1)
    assert "scores" not in out["by_stage"]  # its time was busy
    fns = out["by_function"]
    assert any(k.startswith("mirage/scores.py") and "blur" in k for k in fns), fns
    assert sum(v for k, v in fns.items() if k.startswith("mirage/scores.py")) > 0.5 * out["idle_ms"]
    assert any(k.startswith("aten::") for k in out["by_op"])


def test_a_trace_without_the_render_range_is_refused():
    with pytest.raises(ValueError, match="stage:unstaged"):
        gpu_gaps.idle_gaps([{"ph": "X", "cat": "kernel", "name": "k", "ts": 0, "dur": 1}])


def test_idle_between_stages_is_keyed_by_the_stage_that_follows():
    host = {"ph": "X", "tid": 1, "pid": 1}
    ms = 1000.0  # the trace's clock is in microseconds

    def stage(name, a, d):
        return {**host, "cat": "user_annotation", "name": f"stage:{name}", "ts": a * ms, "dur": d * ms}

    events = [stage("unstaged", 0, 100), stage("encode", 10, 20), stage("decode", 50, 20), stage("encode", 80, 10),
              {"ph": "X", "cat": "kernel", "name": "k", "ts": 30 * ms, "dur": 15 * ms, "tid": 7, "pid": 1}]
    got = gpu_gaps.idle_between_stages(events)
    assert got == {"-> decode": 5.0, "-> encode": 10.0, "total": 15.0}  # 30-50: busy until 45; 70-80 all idle


def test_every_step_the_overhead_script_wraps_still_exists(monkeypatch):
    """scripts/gpu_overhead.py times the render's steps by name: a step renamed or moved must fail here, on the CPU,
    not on the GPU."""
    scripts = Path(__file__).parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))
    spec = importlib.util.spec_from_file_location("gpu_overhead", scripts / "gpu_overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    missing = [f"{owner}.{attr}" for owner, attr in overhead.SEGMENTS
               if not callable(getattr(overhead._owner(owner), attr, None))]
    assert not missing, missing
