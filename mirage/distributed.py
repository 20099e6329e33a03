"""Scale-out: data-parallel batches under ``torchrun``, and context-parallel attention for one long video.

Data parallel (:func:`render_distributed`): every rank renders a deterministic shard of the sorted inputs
(``mirage.batch.shard``: round robin) on its own device (``cuda:LOCAL_RANK``, or the CPU with gloo), skips outputs
that exist, and records each input's result. The results are gathered to rank 0, which writes one merged
``summary.json``; every rank learns whether any input failed, so every rank can exit non-zero.

Context parallel (:func:`context_parallel`): the video transformer's token sequence is split across the ranks of
the process group with diffusers' own context-parallel hooks (``ContextParallelConfig``; Ulysses all-to-all and/or
ring attention). diffusers' ``WanTransformer3DModel`` ships a ``_cp_plan``; ``WanVACETransformer3DModel`` does not,
so :data:`VACE_CP_PLAN` is mirage's plan for it (tested against the single-process output on CPU with gloo).

Nothing here touches CUDA or ``torch.distributed`` at import. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mirage.errors import InputError, MirageError, RuntimeFailure

logger = logging.getLogger("mirage")

SUMMARY_SCHEMA_VERSION = 1
SUMMARY_NAME = "summary.json"  # written by rank 0 into --out-dir (or beside -o OUT.mp4 as <stem>.summary.json)

#: Set (unless already set) before an NCCL process group starts: NVLink multicast (NVLS) stays off; the lent
#: multi-GPU machines require it (and it only affects some all-reduce algorithms, not correctness).
NCCL_MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

#: Default collective timeout: a gather waits for the slowest rank's whole shard, which can take hours. torchrun
#: tears the group down when a worker dies, so a long timeout does not hang a crashed job.
DEFAULT_TIMEOUT_S = 48 * 3600.0


# ---------------------------------------------------------------------------------------------------------------
# environment


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a ``torchrun`` job (from its environment variables).

    ``backend`` and ``device`` are filled by :func:`init_distributed` (None before / without a process group).
    """

    rank: int = 0  # RANK: global rank, 0 .. world_size - 1
    world_size: int = 1  # WORLD_SIZE: processes in the job (all machines)
    local_rank: int = 0  # LOCAL_RANK: rank on this machine = the GPU index it uses
    local_world_size: int = 1  # LOCAL_WORLD_SIZE: processes on this machine
    master_addr: str | None = None  # MASTER_ADDR: rendezvous host (set by torchrun)
    master_port: int | None = None  # MASTER_PORT: rendezvous port (set by torchrun)
    backend: str | None = None  # "nccl" or "gloo" once initialised
    device: str | None = None  # this rank's torch device string ("cuda:LOCAL_RANK" or "cpu") once initialised

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (absent: one process).

        Raises:
            InputError: a variable that is not an integer, or ranks outside ``[0, WORLD_SIZE)``.
        """
        env = os.environ if environ is None else environ

        def num(name: str, default: int | None) -> int | None:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise InputError(f"environment {name}={raw!r}: not an integer; launch with torchrun, which sets it") from None

        world = num("WORLD_SIZE", 1)
        rank = num("RANK", 0)
        local_rank = num("LOCAL_RANK", rank if world is not None else 0)
        local_world = num("LOCAL_WORLD_SIZE", world)
        port = num("MASTER_PORT", None)
        assert world is not None and rank is not None and local_rank is not None and local_world is not None
        if world < 1:
            raise InputError(f"environment WORLD_SIZE={world}: must be at least 1")
        if not 0 <= rank < world:
            raise InputError(f"environment RANK={rank}: outside [0, WORLD_SIZE={world}); launch with torchrun")
        if not 0 <= local_rank < max(local_world, 1):
            raise InputError(f"environment LOCAL_RANK={local_rank}: outside [0, LOCAL_WORLD_SIZE={local_world})")
        return cls(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                   master_addr=env.get("MASTER_ADDR") or None, master_port=port)


def _dist():
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError("torch.distributed: not available in this torch build; install a torch with distributed support")
    return dist


def init_distributed(
    backend: str | None = None,
    *,
    env: DistEnv | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DistEnv:
    """Start this rank's process group (``env://`` rendezvous, as torchrun sets it up) and pick its device.

    Args:
        backend: "nccl" or "gloo"; None = "nccl" when torch sees CUDA, else "gloo" (CPU ranks).
        env: the job layout (default: :meth:`DistEnv.from_env`).
        timeout_s: collective timeout in seconds (the final gather waits for the slowest rank's shard).
    Returns:
        ``env`` with ``backend`` and ``device`` ("cuda:LOCAL_RANK" for nccl, "cpu" for gloo) filled. With
        WORLD_SIZE 1 no process group is started (``backend`` stays None). If a process group already exists it
        is reused.
    Raises:
        InputError: WORLD_SIZE > 1 without MASTER_ADDR/MASTER_PORT (not under torchrun), an unknown backend, or
            nccl with fewer GPUs on this machine than LOCAL_RANK needs.
    """
    env = env or DistEnv.from_env()
    if backend is not None and backend not in ("nccl", "gloo"):
        raise InputError(f"backend: {backend!r} is not nccl or gloo")
    if not env.is_distributed:
        return env
    dist = _dist()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        n = torch.cuda.device_count()
        if env.local_rank >= n:
            raise InputError(f"LOCAL_RANK={env.local_rank}: this machine has {n} CUDA device(s); "
                             f"launch torchrun with --nproc-per-node {n} or fewer")
        for k, v in NCCL_MULTICAST_OFF.items():
            if os.environ.setdefault(k, v) != v:
                logger.warning("%s=%s is set; the multi-GPU machines want %s=%s (NVLink multicast off)",
                               k, os.environ[k], k, v)
        torch.cuda.set_device(env.local_rank)
        device = f"cuda:{env.local_rank}"
    else:
        device = "cpu"
    if dist.is_initialized():
        have = dist.get_backend()
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise InputError(f"torch.distributed: already initialised as rank {dist.get_rank()} of "
                             f"{dist.get_world_size()}, but RANK={env.rank} WORLD_SIZE={env.world_size}")
        return replace(env, backend=str(have), device=device)
    if env.master_addr is None or env.master_port is None:
        raise InputError(f"WORLD_SIZE={env.world_size} but MASTER_ADDR/MASTER_PORT are not set; launch with "
                         "torchrun --nproc-per-node N (it sets them)")
    kw: dict[str, Any] = {}
    if backend == "nccl":
        kw["device_id"] = torch.device(device)
    dist.init_process_group(backend=backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s), **kw)
    logger.info("rank %d/%d (local %d) on %s, %s backend, rendezvous %s:%s", env.rank, env.world_size,
                env.local_rank, device, backend, env.master_addr, env.master_port)
    return replace(env, backend=backend, device=device)


def _build_tiny() -> None:
    from mirage.hub import build_tiny

    build_tiny()


def shutdown_distributed(*, barrier: bool = False) -> None:
    """Destroy the default process group if one exists (safe to call without one).

    ``barrier=True`` first waits for every rank (call it so only where all ranks get to, after the same
    collectives): tearing gloo down while a peer still used the last collective's links aborted a process at exit
    ("terminate called without an active exception") about every other run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def rank_device(config_device: str, env: DistEnv) -> str:
    """The device a rank renders on, from the configured one.

    ``cuda``/``auto`` -> ``cuda:LOCAL_RANK``; ``cpu`` stays. ``cuda:N`` with several ranks is an error: every
    rank would share GPU N.
    """
    if config_device in ("cuda", "auto"):
        if env.device is not None and env.device.startswith("cuda"):
            return env.device
        if config_device == "auto":
            return "cpu"
        return f"cuda:{env.local_rank}"
    if config_device.startswith("cuda:") and env.is_distributed:
        raise InputError(f"--device {config_device}: pins every torchrun rank to one GPU; pass --device cuda "
                         "(each rank then uses cuda:LOCAL_RANK)")
    return config_device


# ---------------------------------------------------------------------------------------------------------------
# data parallel batches


@dataclass(frozen=True)
class DistributedBatchResult:
    """What :func:`render_distributed` returns on every rank.

    ``batch`` is the merged result of all ranks on rank 0 (one item per input, in input order) and this rank's
    own items elsewhere. ``ok`` and ``failed`` are the same on every rank.
    """

    batch: Any  # mirage.batch.BatchResult
    ok: bool  # no input failed on any rank and no rank failed as a whole
    failed: tuple[str, ...]  # images (paths as strings) that failed, or "rank R: <error>" for a rank-level failure
    rank: int
    world_size: int
    summary: Path | None  # the summary.json rank 0 wrote (None on other ranks)
    item_ranks: tuple[int, ...] = ()  # rank of each item of ``batch`` (rank 0: merged order)

    def raise_if_failed(self) -> None:
        """Raise :class:`RuntimeFailure` (exit code 1) naming the failed inputs if any rank had a failure."""
        if not self.ok:
            names = ", ".join(self.failed[:10]) + (f", ... ({len(self.failed)} in all)" if len(self.failed) > 10 else "")
            where = f"; see {self.summary}" if self.summary else ""
            raise RuntimeFailure(f"{len(self.failed)} input(s) failed across {self.world_size} rank(s): {names}{where}")


def summary_path(output) -> Path:
    """Where rank 0 writes the merged summary: ``<out_dir>/summary.json``, or ``<out>.summary.json`` beside -o."""
    if output.out_dir is not None:
        return Path(output.out_dir) / SUMMARY_NAME
    return Path(output.out).with_suffix(".summary.json")


def _item_dict(item, rank: int) -> dict:
    return {"image": str(item.image), "video": str(item.video) if item.video is not None else None, "rank": rank,
            "status": item.status, "error": item.error, "seconds": round(float(item.seconds), 3)}


def _render_rank(images, traj, output, config, options, env: DistEnv, kw: dict) -> dict:
    """Render this rank's shard; never raises (a rank-level error is recorded so the collective still happens)."""
    from mirage import batch as mb

    t0 = time.perf_counter()
    record: dict[str, Any] = {"rank": env.rank, "host": socket.gethostname(), "device": None, "items": [],
                              "error": None, "error_kind": None, "error_class": None, "shard": []}
    try:
        paths = mb.collect_images(images)
    except MirageError as e:
        record.update(error=str(e), error_kind=type(e).__name__, error_class=type(e).__name__)
        return record
    mine = mb.shard(paths, env.rank, env.world_size)
    record["shard"] = [str(p) for p in mine]
    finished: list = []
    user_on_item = kw.pop("on_item", None)

    def on_item(item, i, n):
        finished.append(item)
        if user_on_item is not None:
            user_on_item(item, i, n)

    try:
        device = rank_device(config.device, env)
        record["device"] = device
        cfg = replace(config, device=device)
        res = mb.render(paths, traj, output, cfg, options, rank=env.rank, world_size=env.world_size, on_item=on_item, **kw)
        items = list(res.items)
    except Exception as e:  # noqa: BLE001 - a rank-level failure (model load, a bug) must not hang the others
        msg = str(e) if isinstance(e, MirageError) else f"{type(e).__name__}: {e}"
        logger.error("rank %d: stopped: %s", env.rank, msg)
        record.update(error=msg, error_kind=type(e).__name__,
                      error_class=type(e).__name__ if isinstance(e, MirageError) else None)
        done = {Path(i.image) for i in finished}
        items = list(finished)
        batch_mode = len(paths) > 1 or output.out is None
        for p in mine:
            if p in done:
                continue
            opts = mb._paths_for(p, output, batch_mode)
            video = opts.video
            # batch.render's own test of "done": the MP4 and its report (written last)
            if not output.overwrite and mb.is_done(opts):
                items.append(mb.ItemResult(p, video, "skipped"))
            else:
                items.append(mb.ItemResult(p, video, "failed", error=f"not rendered: rank {env.rank} stopped: {msg}"))
    record["items"] = [_item_dict(i, env.rank) for i in items]
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def merge_records(records: list[dict], world_size: int) -> dict:
    """Rank 0's merged summary from every rank's record (pure; tested directly).

    Items are ordered by input path (the order ``collect_images`` sorts a folder in, then ranks by round robin).
    """
    items = sorted((it for r in records for it in r["items"]), key=lambda it: it["image"])
    counts = {s: sum(1 for it in items if it["status"] == s) for s in ("done", "skipped", "failed")}
    rank_errors = [{"rank": r["rank"], "host": r["host"], "error": r["error"], "kind": r["error_kind"]}
                   for r in records if r["error"]]
    seen: dict[str, int] = {}
    for it in items:
        seen[it["image"]] = seen.get(it["image"], 0) + 1
    dupes = sorted(k for k, v in seen.items() if v > 1)
    failed = [it["image"] for it in items if it["status"] == "failed"]
    failed += [f"rank {e['rank']}: {e['error']}" for e in rank_errors if not any(
        it["rank"] == e["rank"] for it in items)]
    failed += [f"{d}: rendered by several ranks" for d in dupes]
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "world_size": world_size,
        "ok": not failed,
        "counts": counts,
        "failed": failed,
        "duplicates": dupes,  # inputs handled by more than one rank (must stay empty)
        "ranks": [{"rank": r["rank"], "host": r["host"], "device": r["device"], "seconds": r.get("seconds"),
                   "inputs": len(r["shard"]), "error": r["error"]} for r in sorted(records, key=lambda r: r["rank"])],
        "items": items,
        "rank_errors": rank_errors,
    }


def _common_error(records: list[dict]) -> tuple[str, str] | None:
    """(class name, message) when every rank stopped on the same mirage error before finishing any input.

    That is a problem of the command (a missing folder, an unknown preset), not of one input: it is raised on
    every rank like the single-process command would, instead of a summary of N identical failures.
    """
    if not records or not all(r["error_class"] for r in records):
        return None
    if len({r["error"] for r in records}) != 1:
        return None
    if any(it["status"] == "done" for r in records for it in r["items"]):
        return None
    return records[0]["error_class"], records[0]["error"]


def render_distributed(
    images,
    traj,
    output,
    config=None,
    options=None,
    *,
    env: DistEnv | None = None,
    backend: str | None = None,
    **kw,
) -> DistributedBatchResult:
    """Render a batch with one share per torchrun rank; rank 0 writes the merged summary.

    Every rank calls this with the same arguments. Each renders ``mirage.batch.shard(sorted inputs, rank,
    world_size)`` on its own device (``config.device`` "cuda" becomes ``cuda:LOCAL_RANK``), skipping outputs that
    exist. The ranks' results are gathered to rank 0 (``gather_object``), which writes ``summary.json``
    (:func:`summary_path`, atomically) listing every input with its rank, status, error and seconds; rank 0 then
    broadcasts the list of failures so that every rank returns the same ``ok``.

    Args:
        images, traj, output, config, options: as :func:`mirage.batch.render` (``output`` an ``OutputRequest``).
        env: the job layout (default: from the environment; the process group is started if needed, and
            destroyed again at the end if this call started it).
        backend: "nccl"/"gloo"/None (see :func:`init_distributed`).
        **kw: passed to :func:`mirage.batch.render` (depth_file, memory_from, progress, on_item).
    Returns:
        DistributedBatchResult (``raise_if_failed()`` raises the CLI's exit-code-1 error).
    Raises:
        MirageError: when every rank stopped on the same error before finishing an input (no such folder, an
            unknown preset): raised on every rank after the collective, as the one-process command would;
            errors of :func:`init_distributed`. A failing input never raises: it is in ``failed``.
    """
    from mirage.batch import BatchResult, ItemResult
    from mirage.config import PipelineConfig
    from mirage.io import atomic_write_text

    config = config or PipelineConfig()
    if output.out_dir is None and output.out is None:
        raise InputError("render: give -o OUT.mp4 or --out-dir DIR")
    env = env or DistEnv.from_env()
    dist_started_here = env.is_distributed and not _dist().is_initialized()
    tiny = config.preset == "tiny"  # a str, or hub.Preset (a str Enum)
    if tiny and dist_started_here:
        # before the process group exists every rank can build the tiny models (transformers' save_pretrained
        # writes nothing on ranks other than 0 once it does); concurrent builds end in one atomic rename. Each
        # node's own cache gets them, and a rank whose inputs are all done is no one's bottleneck.
        _build_tiny()
    env = init_distributed(backend, env=env)
    try:
        if tiny and not dist_started_here:
            _build_tiny()  # a group made by the caller: rank 0 builds, the others wait (hub.build_tiny)
        record = _render_rank(images, traj, output, config, options, env, dict(kw))
        if env.is_distributed:
            dist = _dist()
            gathered: list[dict] | None = [None] * env.world_size if env.is_main else None  # type: ignore[list-item]
            dist.gather_object(record, gathered, dst=0)
        else:
            gathered = [record]
        summary_file: Path | None = None
        verdict: dict[str, Any] = {}
        if env.is_main:
            assert gathered is not None
            summary = merge_records(gathered, env.world_size)
            verdict = {"failed": summary["failed"], "raise": _common_error(gathered)}
            if verdict["raise"] is None:
                summary_file = summary_path(output)
                try:
                    atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
                except MirageError as e:
                    verdict["failed"] = list(verdict["failed"]) + [f"summary {summary_file}: {e}"]
                    summary_file = None
            merged_items = [ItemResult(Path(it["image"]), Path(it["video"]) if it["video"] else None, it["status"],
                                       it["error"], it["seconds"]) for it in summary["items"]]
            item_ranks = tuple(it["rank"] for it in summary["items"])
        if env.is_distributed:
            box = [verdict]
            _dist().broadcast_object_list(box, src=0)
            verdict = box[0]
            _dist().barrier()  # every rank reaches the teardown together (see shutdown_distributed)
        if verdict.get("raise"):
            from mirage import errors

            cls_name, message = verdict["raise"]
            cls = getattr(errors, cls_name, None)
            raise (cls if isinstance(cls, type) and issubclass(cls, MirageError) else InputError)(message)
        if env.is_main:
            batch = BatchResult(items=merged_items)
        else:
            batch = BatchResult(items=[ItemResult(Path(it["image"]), Path(it["video"]) if it["video"] else None,
                                                  it["status"], it["error"], it["seconds"]) for it in record["items"]])
            item_ranks = tuple(env.rank for _ in batch.items)
        failed = tuple(verdict["failed"])
        return DistributedBatchResult(batch=batch, ok=not failed, failed=failed, rank=env.rank,
                                      world_size=env.world_size, summary=summary_file, item_ranks=item_ranks)
    finally:
        if dist_started_here:
            shutdown_distributed()


# ---------------------------------------------------------------------------------------------------------------
# context parallel (one long video over several GPUs)


def _vace_cp_plan() -> dict:
    """diffusers context-parallel plan for ``WanVACETransformer3DModel`` (which ships none).

    Like ``WanTransformer3DModel._cp_plan``: the rotary embeddings are split on the sequence dim as they leave
    ``rope``; the video tokens are split as they enter ``blocks.0``; the output is gathered after ``proj_out``. The
    VACE branch: ``vace_blocks.0`` gets the (padded) control tokens and the video tokens split the same way (only
    block 0 reads ``hidden_states``; later VACE blocks take block 0's split control tokens), so every hint is split
    exactly like the main stream it is added to. Text tokens (cross-attention K/V) are not split. The timestep is
    one per sample in Wan 2.1 (not per token), so nothing to split there.
    """
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "vace_blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            "control_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def cp_plan_for(transformer: torch.nn.Module) -> dict:
    """The context-parallel plan for a transformer: mirage's for Wan VACE, else the model's own ``_cp_plan``.

    Raises:
        InputError: a model with no plan.
    """
    name = type(transformer).__name__
    if name == "WanVACETransformer3DModel":
        return _vace_cp_plan()
    plan = getattr(transformer, "_cp_plan", None)
    if not plan:
        raise InputError(f"context parallel: {name} has no context-parallel plan (_cp_plan); supported: "
                         "WanVACETransformer3DModel, and diffusers models that define _cp_plan")
    return plan


@dataclass(frozen=True)
class ContextParallelInfo:
    """How a transformer was split (see :func:`context_parallel`)."""

    world_size: int  # ranks that share each forward pass
    ulysses_degree: int  # all-to-all over heads: heads % ulysses_degree == 0
    ring_degree: int  # ring attention (K/V passed around); needs an attention backend that returns the LSE
    attention_backend: str | None  # diffusers attention backend set on the model (None = left as it was)
    model: str  # transformer class name
    token_multiple: int  # the video token count (T * h/2 * w/2 latents) must be a multiple of this


def context_parallel(
    transformer: torch.nn.Module,
    world_size: int | None = None,
    *,
    ulysses_degree: int | None = None,
    ring_degree: int | None = None,
    attention_backend: str | None = None,
) -> ContextParallelInfo:
    """Split ``transformer``'s token sequence over the ranks of the default process group (diffusers' CP hooks).

    Every rank must hold the same weights and call the model with the same inputs (same seed, same
    conditioning); each then computes attention for 1/world_size of the video tokens and the output is gathered,
    so every rank returns the full output (identical up to float rounding to the single-GPU result).

    Args:
        transformer: a ``WanVACETransformer3DModel`` (or a diffusers model with a ``_cp_plan``), on this rank's
            device.
        world_size: ranks to split over; default: the whole process group. Must equal its size.
        ulysses_degree, ring_degree: the split (product = world_size). Default: Ulysses over the largest divisor
            of the head count that divides world_size, ring over the rest (e.g. Wan 1.3B, 12 heads, 8 GPUs:
            Ulysses 4 x ring 2).
        attention_backend: diffusers attention backend to set first (e.g. "_native_cudnn", "flash"); ring
            attention needs one that returns the log-sum-exp (not "native"). None: left as is, unless ring > 1 on
            CUDA, where "_native_cudnn" is set.
    Returns:
        ContextParallelInfo.
    Raises:
        InputError: torch.distributed not initialised (run under torchrun and call :func:`init_distributed`),
            world_size < 2 or not the group's size, a model without a plan, degrees that do not fit the heads,
            or a model already made parallel. A forward pass whose token count does not divide by the world size
            raises InputError naming the fix (see ``ContextParallelInfo.token_multiple``).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InputError("context parallel: torch.distributed is not initialised; launch with torchrun "
                         "--nproc-per-node N and call mirage.distributed.init_distributed() first")
    group_size = dist.get_world_size()
    world_size = group_size if world_size is None else int(world_size)
    if world_size != group_size:
        raise InputError(f"context parallel: world_size={world_size} but the process group has {group_size} ranks; "
                         "pass the group size (splitting over a subgroup is not supported)")
    if world_size < 2:
        raise InputError(f"context parallel: world_size={world_size}; it needs at least 2 ranks (GPUs)")
    name = type(transformer).__name__
    plan = cp_plan_for(transformer)
    if getattr(transformer, "_parallel_config", None) is not None:
        raise InputError(f"context parallel: this {name} is already parallel; apply it once per model")
    heads = int(getattr(transformer.config, "num_attention_heads", 0) or 0)
    if ulysses_degree is None and ring_degree is None:
        ulysses_degree = math.gcd(heads, world_size) if heads else 1
        ring_degree = world_size // ulysses_degree
    elif ulysses_degree is None:
        ulysses_degree = world_size // int(ring_degree)  # type: ignore[arg-type]
    elif ring_degree is None:
        ring_degree = world_size // int(ulysses_degree)
    assert ulysses_degree is not None and ring_degree is not None
    if ulysses_degree < 1 or ring_degree < 1 or ulysses_degree * ring_degree != world_size:
        raise InputError(f"context parallel: ulysses_degree={ulysses_degree} x ring_degree={ring_degree} must equal "
                         f"world_size={world_size}")
    if heads and heads % ulysses_degree:
        raise InputError(f"context parallel: ulysses_degree={ulysses_degree} does not divide the {heads} attention "
                         f"heads of {name}; use a divisor of {heads} and ring attention for the rest")
    device = next(transformer.parameters()).device
    if attention_backend is None and ring_degree > 1 and device.type == "cuda":
        attention_backend = "_native_cudnn"
    if ring_degree > 1 and attention_backend in (None, "native"):
        raise InputError(f"context parallel: ring_degree={ring_degree} needs an attention backend that returns the "
                         "log-sum-exp (e.g. _native_cudnn, flash); 'native' does not. Use a Ulysses-only split")
    if attention_backend is not None:
        try:
            transformer.set_attention_backend(attention_backend)
        except (ValueError, RuntimeError, ImportError) as e:
            raise InputError(f"context parallel: attention backend {attention_backend!r} unavailable ({e}); "
                             "pick another one (see diffusers' AttentionBackendName)") from None

    from diffusers import ContextParallelConfig

    cp = ContextParallelConfig(ring_degree=ring_degree, ulysses_degree=ulysses_degree)
    if device.type != "cpu" and torch.accelerator.device_count() > 0:
        # diffusers' documented entry point (builds the device mesh on the accelerator type)
        transformer.enable_parallelism(config=cp, cp_plan=plan)
    else:
        _enable_cp_cpu(transformer, cp, plan)
    token_multiple = world_size
    _install_token_check(transformer, token_multiple)
    logger.info("context parallel: %s over %d ranks (Ulysses %d x ring %d, attention %s)", name, world_size,
                ulysses_degree, ring_degree, attention_backend or "as set")
    return ContextParallelInfo(world_size=world_size, ulysses_degree=ulysses_degree, ring_degree=ring_degree,
                               attention_backend=attention_backend, model=name, token_multiple=token_multiple)


def check_context_parallel(config) -> None:
    """Raise InputError (one line) for render settings context parallel cannot run with: no denoiser
    (``--denoiser none``), CPU offload or torch.compile (CP hooks must be in place before either), or ``--fp8``
    (its attention bypasses the split). ``config`` is a :class:`mirage.config.PipelineConfig`; called before
    any model loads."""
    from mirage.config import DenoiserKind
    from mirage.offload import OffloadMode
    from mirage.precision import Fp8Mode

    if config.denoiser is not DenoiserKind.VACE:
        raise InputError("context parallel: splits the video transformer, but this pipeline has none "
                         "(--denoiser none); use --denoiser vace")
    if config.offload is not OffloadMode.NONE:
        raise InputError(f"context parallel: --offload {config.offload.value} is not supported with context "
                         "parallel; each GPU holds the model, drop --offload")
    if config.compile:
        raise InputError("context parallel: --compile is not supported with context parallel yet; drop --compile")
    if config.fp8 is not Fp8Mode.NONE:
        raise InputError(f"--context-parallel with --fp8 {config.fp8.value}: FP8 attention bypasses the split "
                         "attention; drop --fp8")


def enable_pipeline_context_parallel(pipe, **kw) -> ContextParallelInfo:
    """Apply :func:`context_parallel` to a :class:`mirage.pipeline.Pipeline`'s video transformer.

    Every rank builds the same Pipeline (same config and seed) and renders the same input; only rank 0 should
    write outputs. ``**kw`` goes to :func:`context_parallel`.

    Raises:
        InputError: the errors of :func:`check_context_parallel` (callers should run it before loading models)
            and of :func:`context_parallel`.
    """
    check_context_parallel(pipe.config)
    return context_parallel(pipe.denoiser.transformer, **kw)


def _enable_cp_cpu(transformer: torch.nn.Module, cp, plan: dict) -> None:
    """What ``ModelMixin.enable_parallelism`` does, with a CPU device mesh (gloo).

    diffusers' ``enable_parallelism`` picks the device as ``rank % torch.accelerator.device_count()``, a division
    by zero without an accelerator; the rest (config setup, processor wiring, hooks) is the same calls.
    """
    import torch.distributed as dist
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
    config = ParallelConfig(context_parallel_config=cp)
    config.setup(dist.get_rank(), dist.get_world_size(), torch.device("cpu"), mesh=mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        if isinstance(module, (Attention, AttentionModuleMixin)):
            proc = getattr(module, "processor", None)
            if proc is not None and hasattr(proc, "_parallel_config"):
                proc._parallel_config = config
    apply_context_parallel(transformer, cp, plan)


def _install_token_check(transformer: torch.nn.Module, multiple: int) -> None:
    """Make a forward pass whose video token count does not divide by ``multiple`` fail with one clear line."""
    patch = tuple(getattr(transformer.config, "patch_size", (1, 2, 2)))

    def check(module, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        if isinstance(x, torch.Tensor) and x.ndim == 5:
            t, h, w = x.shape[2] // patch[0], x.shape[3] // patch[1], x.shape[4] // patch[2]
            tokens = t * h * w
            if tokens % multiple:
                raise InputError(
                    f"context parallel: {tokens} video tokens ({t} latent frames x {h} x {w}) do not split over "
                    f"{multiple} ranks; pick --size/--chunk-frames so that the count is a multiple of {multiple}")
        return None

    transformer.register_forward_pre_hook(check, with_kwargs=True)


__all__ = [
    "DistEnv", "init_distributed", "shutdown_distributed", "rank_device", "render_distributed",
    "check_context_parallel",
    "DistributedBatchResult", "merge_records", "summary_path", "context_parallel", "cp_plan_for",
    "enable_pipeline_context_parallel",
    "ContextParallelInfo", "NCCL_MULTICAST_OFF", "SUMMARY_NAME",
]
