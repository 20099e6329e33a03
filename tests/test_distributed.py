"""Scale-out: torchrun data-parallel batches (2 gloo processes on the CPU) and context-parallel attention.

The multi-process tests launch ``python -m torch.distributed.run --nproc-per-node 2`` on tests/_dist_driver.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage.batch import OutputRequest, shard
from mirage.errors import InputError, RuntimeFailure
from mirage.parallel import (
    DistEnv,
    DistributedBatchResult,
    bench_context_parallel,
    context_parallel,
    cp_plan_for,
    init_distributed,
    init_rank,
    merge_records,
    rank_device,
    render_batch,
    render_distributed,
    summary_path,
)
from mirage.parallel.data import _common_error

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "_dist_driver.py"


# ------------------------------------------------------------------------------------------------ pure pieces


def test_dist_env_from_torchrun_variables():
    env = DistEnv.from_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                            "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (5, 8, 1, 4)
    assert (env.master_addr, env.master_port) == ("node0", 29500)
    assert env.is_distributed and not env.is_main
    solo = DistEnv.from_env({})
    assert (solo.rank, solo.world_size, solo.local_rank, solo.is_distributed, solo.is_main) == (0, 1, 0, False, True)


@pytest.mark.parametrize("environ, needle", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=3"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
])
def test_dist_env_rejects_bad_variables(environ, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(")) as e:
        DistEnv.from_env(environ)
    assert "\n" not in str(e.value)


def test_init_distributed_needs_rendezvous_and_known_backend():
    env = DistEnv(rank=0, world_size=2)
    with pytest.raises(InputError, match="MASTER_ADDR/MASTER_PORT"):
        init_distributed("gloo", env=env)
    with pytest.raises(InputError, match="'mpi' is not nccl or gloo"):
        init_distributed("mpi", env=env)
    assert init_distributed(None, env=DistEnv()) == DistEnv()  # one process: no group, nothing changed


def test_rank_device():
    env = DistEnv(rank=3, world_size=4, local_rank=1)
    assert rank_device("cuda", env) == "cuda:1"
    assert rank_device("cuda", DistEnv(rank=0, world_size=2, local_rank=0, device="cuda:0")) == "cuda:0"
    assert rank_device("cpu", env) == "cpu"
    with pytest.raises(InputError, match="--device cuda:2: pins every torchrun rank"):
        rank_device("cuda:2", env)
    assert rank_device("cuda:2", DistEnv()) == "cuda:2"  # one process may pick its GPU


def _record(rank, items, error=None, error_class=None, shard_=None):
    return {"rank": rank, "host": "h", "device": "cpu", "seconds": 1.0, "error": error, "error_kind": error_class,
            "error_class": error_class, "shard": shard_ if shard_ is not None else [i[0] for i in items],
            "items": [{"image": im, "video": im + ".mp4", "rank": rank, "status": st, "error": None, "seconds": 0.5}
                      for im, st in items]}


def test_merge_records_orders_counts_and_flags():
    recs = [_record(0, [("a", "done"), ("c", "failed")]), _record(1, [("b", "skipped"), ("d", "done")])]
    s = merge_records(recs, 2)
    assert [it["image"] for it in s["items"]] == ["a", "b", "c", "d"]
    assert [it["rank"] for it in s["items"]] == [0, 1, 0, 1]
    assert s["counts"] == {"done": 2, "skipped": 1, "failed": 1}
    assert s["failed"] == ["c"] and s["ok"] is False and s["duplicates"] == []
    assert [r["inputs"] for r in s["ranks"]] == [2, 2]
    # an input rendered by two ranks is a failure of the sharding, not a success
    dup = merge_records([_record(0, [("a", "done")]), _record(1, [("a", "done")])], 2)
    assert dup["duplicates"] == ["a"] and dup["ok"] is False
    # a rank that failed before any input (its files unreadable there) is named
    lost = merge_records([_record(0, [("a", "done")]), _record(1, [], error="input x: no such file", error_class="InputError")], 2)
    assert lost["failed"] == ["rank 1: input x: no such file"] and not lost["ok"]


def test_common_error_only_when_every_rank_stopped_the_same_way():
    same = [_record(r, [], error="preset 'x': unknown", error_class="ModelError") for r in range(3)]
    assert _common_error(same) == ("ModelError", "preset 'x': unknown")
    differ = same[:2] + [_record(2, [], error="other", error_class="ModelError")]
    assert _common_error(differ) is None
    one_done = same[:2] + [_record(2, [("a", "done")], error="preset 'x': unknown", error_class="ModelError")]
    assert _common_error(one_done) is None
    assert _common_error([_record(0, [("a", "failed")])]) is None


def test_raise_if_failed_names_inputs_and_exit_code():
    res = DistributedBatchResult(batch=None, ok=False, failed=("x.png", "y.png"), rank=1, world_size=2,
                                 summary=Path("o/summary.json"))
    with pytest.raises(RuntimeFailure, match=r"2 input\(s\) failed across 2 rank\(s\): x.png, y.png; see o/summary.json") as e:
        res.raise_if_failed()
    assert e.value.exit_code == 1
    DistributedBatchResult(batch=None, ok=True, failed=(), rank=0, world_size=2, summary=None).raise_if_failed()


def test_summary_path():
    assert summary_path(OutputRequest(out_dir=Path("v"))) == Path("v/summary.json")
    assert summary_path(OutputRequest(out=Path("v/room.mp4"))) == Path("v/room.summary.json")


def test_render_distributed_one_process_raises_command_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        render_distributed([tmp_path / "missing"], "orbit", OutputRequest(out_dir=tmp_path / "o"), env=DistEnv())
    assert not (tmp_path / "o").exists()


def test_init_rank_sets_this_ranks_device_without_a_group_for_one_process():
    assert init_rank("cpu", env=DistEnv()) == DistEnv(device="cpu")
    assert init_rank("cuda", env=DistEnv()).device == "cuda:0"  # cuda -> cuda:LOCAL_RANK
    with pytest.raises(InputError, match="MASTER_ADDR/MASTER_PORT"):  # two ranks need torchrun's rendezvous
        init_rank("cpu", env=DistEnv(rank=0, world_size=2))


def test_plan_output_is_batch_renders_done_test(tmp_path, monkeypatch):
    import mirage.batch as mb

    img = tmp_path / "a.png"
    one = mb.plan_output(img, OutputRequest(out=tmp_path / "v.mp4"), inputs=1)
    assert (one.opts.video, one.done) == (tmp_path / "v.mp4", False)  # nothing written yet
    many = mb.plan_output(img, OutputRequest(out_dir=tmp_path / "o"), inputs=3)
    assert many.opts.video == tmp_path / "o" / "a.mp4" and many.opts.report is None  # batch: named after the input
    seen = []
    monkeypatch.setattr(mb, "is_done", lambda opts: seen.append(opts.video) or True)
    assert mb.plan_output(img, OutputRequest(out_dir=tmp_path / "o"), inputs=3).done
    assert seen == [tmp_path / "o" / "a.mp4"]
    assert not mb.plan_output(img, OutputRequest(out_dir=tmp_path / "o", overwrite=True), inputs=3).done


def test_render_batch_picks_one_process_or_the_ranks(tmp_path, monkeypatch):
    import mirage.batch as mb
    import mirage.parallel.data as pd

    calls = []

    def one_process(images, traj, output, config, options, **kw):
        calls.append(("batch", kw))
        return mb.BatchResult(items=[mb.ItemResult(Path("a.png"), Path("a.mp4"), "done"),
                                     mb.ItemResult(Path("b.png"), Path("b.mp4"), "failed", error="bad")])

    def ranks(images, traj, output, config, options, *, env, **kw):
        calls.append(("ranks", env.world_size))
        return DistributedBatchResult(batch=None, ok=True, failed=(), rank=env.rank, world_size=env.world_size,
                                      summary=None)

    monkeypatch.setattr(mb, "render", one_process)
    monkeypatch.setattr(pd, "render_distributed", ranks)
    req = OutputRequest(out_dir=tmp_path / "o")
    res = render_batch(["x"], "orbit", req, env=DistEnv(), on_item=print)
    assert calls == [("batch", {"on_item": print})] and res.summary == tmp_path / "o" / "summary.json"
    summary = json.loads(res.summary.read_text())  # one process writes the batch's summary too
    assert summary["world_size"] == 1 and summary["counts"] == {"done": 1, "skipped": 0, "failed": 1}
    assert summary["worst_first"] == []  # the fake render scored nothing
    assert (res.is_main, res.distributed, res.ok, res.failed, res.item_ranks) == (True, False, False, ("b.png",), (0, 0))
    with pytest.raises(RuntimeFailure, match=r"^1 of 2 inputs failed: b.png$"):  # the one-process CLI line
        res.raise_if_failed()
    res = render_batch(["x"], "orbit", req, env=DistEnv(rank=1, world_size=2))
    assert calls[-1] == ("ranks", 2) and not res.is_main


def test_bench_context_parallel_refuses_settings_before_models_load(monkeypatch):
    import mirage.bench as bench
    from mirage.config import DenoiserKind, PipelineConfig

    monkeypatch.setattr(bench, "build_pipeline", lambda cfg: pytest.fail("a model was built"))
    cfg = bench.BenchConfig(config=PipelineConfig(preset="tiny", denoiser=DenoiserKind.NONE))
    with pytest.raises(InputError, match="--denoiser none"):
        bench_context_parallel(cfg, DistEnv(device="cpu"))


def test_shard_is_a_partition():
    items = [f"{i:02d}" for i in range(11)]
    parts = [shard(items, r, 4) for r in range(4)]
    assert sorted(sum(parts, [])) == items and parts[1] == ["01", "05", "09"]


# ------------------------------------------------------------------------------------------------ context parallel


def _tiny_vace():
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(0)
    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0], vace_in_channels=96,
    )


def test_context_parallel_guards():
    import torch.distributed as dist

    assert not dist.is_initialized()
    with pytest.raises(InputError, match="torch.distributed is not initialised; launch with torchrun"):
        context_parallel(_tiny_vace(), 2)
    with pytest.raises(InputError, match="Linear has no context-parallel plan"):
        cp_plan_for(torch.nn.Linear(2, 2))


def test_vace_plan_names_real_modules():
    from diffusers.hooks.context_parallel import _get_submodule_by_name

    model = _tiny_vace()
    plan = cp_plan_for(model)
    assert set(plan) == {"rope", "vace_blocks.0", "blocks.0", "proj_out"}
    for name in plan:
        assert isinstance(_get_submodule_by_name(model, name), torch.nn.Module)
    assert plan["proj_out"].gather_dim == 1


# ------------------------------------------------------------------------------------------------ torchrun, 2 ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, timeout: int = 240, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **env_extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(DRIVER), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _write_images(folder: Path, names: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(folder / f"{n}.png")


def _ranks(res_dir: Path) -> dict[int, dict]:
    return {r: json.loads((res_dir / f"rank{r}.json").read_text()) for r in (0, 1)}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One torchrun launch (2 gloo ranks): the context-parallel check, then a batch with one corrupt input. The
    ranks start on an EMPTY model cache: rank 0 builds the tiny preset while rank 1 waits for it (both building
    it left rank 1's incomplete depth folder behind: transformers saves nothing on ranks other than 0)."""
    tmp = tmp_path_factory.mktemp("dist")
    img, out, res = tmp / "img", tmp / "out", tmp / "r1"
    _write_images(img, "abcd")
    (img / "c.png").write_bytes(b"not a png")  # rank 0's second input (round robin over a, b, c, d)
    res.mkdir()
    p = _torchrun("batch", str(img), str(out), str(res), "cp", MIRAGE_CACHE=str(tmp / "cache"))
    return tmp, p


def test_torchrun_batch_shards_merges_and_fails_together(first_run):
    tmp_path, p = first_run
    img, out, res1 = tmp_path / "img", tmp_path / "out", tmp_path / "r1"
    assert p.returncode != 0, p.stderr[-3000:]
    ranks = _ranks(res1)
    assert [ranks[r]["exit_code"] for r in (0, 1)] == [1, 1]  # the failure was on rank 0; rank 1 fails too
    assert all(ranks[r]["failed"] == [str(img / "c.png")] for r in (0, 1))
    assert [i["image"] for i in ranks[1]["items"]] == [str(img / "b.png"), str(img / "d.png")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ok"] is False and summary["duplicates"] == []
    got = {Path(i["image"]).name: (i["rank"], i["status"]) for i in summary["items"]}
    assert got == {"a.png": (0, "done"), "b.png": (1, "done"), "c.png": (0, "failed"), "d.png": (1, "done")}
    assert len(summary["items"]) == 4  # every input exactly once
    assert "c.png: cannot be read" in next(i["error"] for i in summary["items"] if i["image"].endswith("c.png"))
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    for n in "abd":
        assert (out / f"{n}.mp4").stat().st_size > 0 and (out / f"{n}.json").is_file()
    assert not (out / "c.mp4").exists()
    assert not list(out.glob(".*part*"))  # no temporary file left behind
    mtimes = {n: (out / f"{n}.mp4").stat().st_mtime_ns for n in "abd"}

    # fix the input and rerun: the three done outputs are skipped, only c is rendered; everyone exits 0
    _write_images(img, "c")
    res2 = tmp_path / "r2"
    res2.mkdir()
    p = _torchrun("batch", str(img), str(out), str(res2), MIRAGE_CACHE=str(tmp_path / "cache"))
    assert p.returncode == 0, p.stderr[-3000:]
    ranks = _ranks(res2)
    assert [ranks[r]["exit_code"] for r in (0, 1)] == [0, 0] and ranks[1]["ok"]
    summary = json.loads((out / "summary.json").read_text())
    got = {Path(i["image"]).name: i["status"] for i in summary["items"]}
    assert got == {"a.png": "skipped", "b.png": "skipped", "c.png": "done", "d.png": "skipped"}
    assert summary["ok"] is True and summary["failed"] == []
    assert {n: (out / f"{n}.mp4").stat().st_mtime_ns for n in "abd"} == mtimes
    assert (out / "c.mp4").is_file()


def test_torchrun_context_parallel_matches_one_process(first_run):
    tmp_path, p = first_run
    for r in (0, 1):
        assert (tmp_path / "r1" / f"cp{r}.json").is_file(), p.stderr[-3000:]
        res = json.loads((tmp_path / "r1" / f"cp{r}.json").read_text())
        assert res["shape"] == res["ref_shape"] == [1, 16, 3, 8, 12]
        assert (res["ulysses"], res["ring"]) == (2, 1)
        # each rank's blocks (main and VACE branch) saw half of the 3 * 4 * 6 = 72 video tokens ...
        assert res["block_tokens"] == 36 and res["vace_tokens"] == 36
        # ... and the gathered output equals the single-process forward
        assert res["max_abs_diff"] <= 1e-5 * max(1.0, res["ref_abs_max"])
        assert res["odd_error"].startswith("context parallel: 9 video tokens (1 latent frames x 3 x 3) do not split over 2")


def test_bench_context_parallel_under_torchrun(tmp_path):
    """`torchrun -m mirage_cli bench --context-parallel`: both ranks render the split chunk, rank 0 writes the JSON."""
    out = tmp_path / "cp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CI="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()),
           "-m", "mirage_cli", "bench", "--context-parallel", "--device", "cpu", "--frames", "9", "--steps", "2",
           "--repeats", "1", "--warmup", "0", "--chunk-frames", "9", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["header"]["context_parallel_world_size"] == 2
    assert (rep["header"]["compile"], rep["header"]["fp8"]) == (False, "none")  # the settings are in the results
    assert [r["error"] for r in rep["rows"]] == [None, None]
    assert all(r["runs"] and r["runs"][0]["stages_ms"]["denoise"] > 0 for r in rep["rows"])
