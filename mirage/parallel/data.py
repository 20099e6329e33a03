"""Data-parallel batches under ``torchrun``: every rank renders its share of the inputs, rank 0 merges the summary.

Every rank renders a deterministic shard of the sorted inputs (``mirage.batch.shard``: round robin) on its own
device (``cuda:LOCAL_RANK``, or the CPU with gloo), skips outputs that are done (``mirage.batch.plan_output``, the
batch's own test), and records each input's result. The results are gathered to rank 0, which writes one merged
``summary.json``; every rank learns whether any input failed, so every rank can exit non-zero. See
``docs/scale-out.md``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mirage.errors import InputError, MirageError, RuntimeFailure
from mirage.parallel.environment import (
    DistEnv,
    init_distributed,
    rank_device,
    shutdown_distributed,
    torch_distributed,
)

logger = logging.getLogger("mirage")

SUMMARY_SCHEMA_VERSION = 2  # 2: each item's consistency ``scores`` and ``worst_first`` (issue 16); one process writes it too
SUMMARY_NAME = "summary.json"  # written by rank 0 into --out-dir (or beside -o OUT.mp4 as <stem>.summary.json)
#: The scores ``worst_first`` lists per video (the render report's ``scores``, docs/report.md).
WORST_FIRST_KEYS = ("memory_agreement_psnr", "memory_agreement_ssim", "temporal_change", "revisit_psnr")


def _build_tiny() -> None:
    from mirage.hub import build_tiny

    build_tiny()


@dataclass(frozen=True)
class DistributedBatchResult:
    """What :func:`render_distributed` (and :func:`render_batch`) returns on every rank.

    ``batch`` is the merged result of all ranks on rank 0 (one item per input, in input order) and this rank's
    own items elsewhere. ``ok`` and ``failed`` are the same on every rank. A one-process run (``distributed``
    False) holds :func:`mirage.batch.render`'s result as is.
    """

    batch: Any  # mirage.batch.BatchResult
    ok: bool  # no input failed on any rank and no rank failed as a whole
    failed: tuple[str, ...]  # images (paths as strings) that failed, or "rank R: <error>" for a rank-level failure
    rank: int
    world_size: int
    summary: Path | None  # the summary.json rank 0 wrote (None on other ranks)
    item_ranks: tuple[int, ...] = ()  # rank of each item of ``batch`` (rank 0: merged order)
    distributed: bool = True  # results gathered over the ranks; False: one process, no summary.json

    @property
    def is_main(self) -> bool:
        """Rank 0: it holds every input's result (show the summary there only)."""
        return self.rank == 0

    def raise_if_failed(self) -> None:
        """Raise :class:`RuntimeFailure` (exit code 1) naming the failed inputs if any rank had a failure."""
        if not self.ok and not self.distributed:
            raise RuntimeFailure(f"{len(self.failed)} of {len(self.batch.items)} inputs failed: {', '.join(self.failed)}")
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
            "status": item.status, "error": item.error, "seconds": round(float(item.seconds), 3),
            "scores": getattr(item, "scores", None)}


def worst_first(items: list[dict]) -> list[dict]:
    """The videos rendered in this run, worst first: lowest memory agreement PSNR first (ties: most temporal change
    first), videos without a score last; each as ``{"image", "video", <WORST_FIRST_KEYS>}`` (pure)."""
    scored = [it for it in items if it["status"] == "done" and it.get("scores")]

    def key(it: dict) -> tuple:
        s = it["scores"]
        psnr, change = s.get("memory_agreement_psnr"), s.get("temporal_change")
        return (psnr is None, psnr if psnr is not None else 0.0, -(change or 0.0), it["image"])

    return [{"image": it["image"], "video": it["video"], **{k: it["scores"].get(k) for k in WORST_FIRST_KEYS}}
            for it in sorted(scored, key=key)]


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
        for p in mine:
            if p in done:
                continue
            planned = mb.plan_output(p, output, inputs=len(paths))  # batch.render's own test of "done"
            video = planned.opts.video
            if planned.done:
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
        "worst_first": worst_first(items),  # the rendered videos by their consistency scores, worst first
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
        **kw: passed to :func:`mirage.batch.render` (depth_file, memory_from, progress, on_item); ``progress``
            is reported by rank 0 only, ``on_item`` by every rank for its own inputs.
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
    dist_started_here = env.is_distributed and not torch_distributed().is_initialized()
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
        if not env.is_main:  # rank 0's chunk and step progress stands for all (one terminal, one set of bars)
            kw = dict(kw, progress=None)
        record = _render_rank(images, traj, output, config, options, env, dict(kw))
        if env.is_distributed:
            dist = torch_distributed()
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
            torch_distributed().broadcast_object_list(box, src=0)
            verdict = box[0]
            torch_distributed().barrier()  # every rank reaches the teardown together (see shutdown_distributed)
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


def render_batch(images, traj, output, config=None, options=None, *, env: DistEnv | None = None,
                 **kw) -> DistributedBatchResult:
    """The library call behind ``mirage render``: one process, or one share per rank under ``torchrun``.

    With WORLD_SIZE > 1 in the environment (``env``) every rank runs :func:`render_distributed`; otherwise this
    process runs :func:`mirage.batch.render` and writes the same summary.json for a batch (``--out-dir``). Arguments as
    :func:`mirage.batch.render` (``rank``/``world_size`` come from the environment).

    Returns:
        DistributedBatchResult: ``batch`` to show where ``is_main``; ``raise_if_failed()`` raises the exit-code-1
        error naming the failed inputs.
    Raises:
        mirage.batch.BatchInterrupted: Ctrl-C, with the inputs that finished (one process).
        MirageError: as :func:`mirage.batch.render` and :func:`render_distributed`.
    """
    env = env or DistEnv.from_env()
    if env.is_distributed:
        return render_distributed(images, traj, output, config, options, env=env, **kw)
    from mirage import batch as mb

    t0 = time.perf_counter()
    res = mb.render(images, traj, output, config, options, **kw)
    failed = tuple(str(i.image) for i in res.failed)
    summary = None
    if output.out_dir is not None:  # a batch: the same summary.json as torchrun's, one rank
        record = {"rank": 0, "host": socket.gethostname(), "device": getattr(config, "device", None),
                  "items": [_item_dict(i, 0) for i in res.items], "error": None, "error_kind": None,
                  "shard": [str(i.image) for i in res.items], "seconds": round(time.perf_counter() - t0, 3)}
        from mirage.io import atomic_write_text

        summary = summary_path(output)
        try:
            atomic_write_text(summary, json.dumps(merge_records([record], 1), indent=2) + "\n")
        except MirageError as e:  # the videos are written; the run still fails, naming the summary
            failed, summary = (*failed, f"summary {summary}: {e}"), None
    return DistributedBatchResult(batch=res, ok=not failed, failed=failed, rank=0, world_size=1, summary=summary,
                                  item_ranks=tuple(0 for _ in res.items), distributed=False)
