"""Rendering many images: models load once, outputs named after inputs, done outputs skipped, failures collected,
each input's files written on a thread while the next input renders (docs/architecture.md, "Batches").

``render`` is the library call behind ``mirage render``: everything the CLI does, without the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mirage.config import PipelineConfig, RenderOptions, check_pipeline_config, check_render_options
from mirage.errors import InputError, MirageError, OutputBusy
from mirage.inputs import InputPlan, TrajectoryOptions, check_input, with_profile_warning
from mirage.io import claim, interrupts_deferred, remove_part_files
from mirage.outputs import OutputOptions, default_report_path, write_outputs
from mirage.pipeline import Pipeline, ProgressCallback, RenderResult
from mirage.report import StageTimer
from mirage.video import IMAGE_SUFFIXES

logger = logging.getLogger("mirage")


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs each input gets (paths are derived per input in a batch)."""

    out: Path | None = None  # single input: the MP4 path
    out_dir: Path | None = None  # batch: folder of MP4s named after the inputs
    report: Path | None = None  # single input only: the JSON report path (a batch writes <name>.json beside each MP4)
    frames_dir: bool | Path = False  # a path: PNG frames there (batch: <path>/<name>/); True: <video stem>_frames/
    save_warped: bool = False  # <name>_warped.mp4 beside the output
    save_memory: Path | bool = False  # a path (single: the file; batch: a folder of <name>.memory.safetensors)
    #                                   or True (beside each MP4: <name>.memory.safetensors)
    worldscore: Path | None = None  # single: the folder; batch: <worldscore>/<name>/
    plot: Path | None = None  # consistency scores along the path: single: the PNG; batch: <plot>/<name>.png
    overwrite: bool = False  # re-render outputs that exist
    crf: int = 18
    write_behind: bool = True  # batch: write each input's files on a background thread while the next one renders


@dataclass
class ItemResult:
    image: Path
    video: Path | None
    status: str  # "done", "skipped", "failed"
    error: str | None = None
    seconds: float = 0.0
    scores: dict | None = None  # the video's consistency scores (report ``scores`` but ``per_frame``), when rendered


@dataclass
class BatchResult:
    items: list[ItemResult] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C stopped the batch (the items listed finished before it)

    @property
    def failed(self) -> list[ItemResult]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during :func:`render`: ``result`` lists the inputs that finished before it (their outputs
    are complete; the interrupted one left nothing behind). Still a KeyboardInterrupt for callers that stop on one."""

    def __init__(self, result: BatchResult):
        super().__init__("interrupted")
        self.result = result


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand folders (their image files, sorted by name, not recursive) and check files exist."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            try:
                found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            except PermissionError:
                raise InputError(f"input folder {p}: cannot be read (permission denied); check its permissions") from None
            if not found:
                raise InputError(f"input folder {p}: holds no image ({', '.join(IMAGE_SUFFIXES)}); pass images or another folder")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"input {p}: no such file or folder; check the path")
    names = [q.stem for q in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes and len(out) > 1:
        raise InputError(f"inputs: several images share the name {dupes[0]!r}; outputs are named after inputs, rename one")
    return out


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The deterministic share of ``items`` for ``rank`` of ``world_size`` (round robin over the sorted list)."""
    return list(items[rank::world_size])


@dataclass(frozen=True)
class PlannedOutput:
    """Where one input's outputs go, and whether :func:`render` skips it."""

    opts: OutputOptions  # the input's output paths (a batch names them after the input)
    done: bool  # its outputs are complete (:func:`is_done`) and --overwrite is off: render skips the input


def plan_output(image: Path, output: OutputRequest, *, inputs: int) -> PlannedOutput:
    """The output paths of ``image`` and :func:`render`'s test of "done" (a playable MP4 and its report, written
    last: an MP4 alone is an interrupted render), for a run over ``inputs`` images (the whole run, not a shard)."""
    opts = _paths_for(image, output, _batch_mode(inputs, output))
    return PlannedOutput(opts=opts, done=not output.overwrite and is_done(opts))


def _batch_mode(inputs: int, output: OutputRequest) -> bool:
    """Several inputs, or one with --out-dir: outputs are named after the inputs."""
    return inputs > 1 or output.out is None


def _paths_for(image: Path, req: OutputRequest, batch: bool) -> OutputOptions:
    if batch:
        assert req.out_dir is not None
        video = req.out_dir / f"{image.stem}.mp4"
        if isinstance(req.frames_dir, Path):
            frames = req.frames_dir / image.stem
        else:
            frames = req.out_dir / f"{image.stem}_frames" if req.frames_dir else None
        if isinstance(req.save_memory, Path):
            memory = req.save_memory / f"{image.stem}.memory.safetensors"
        else:
            memory = req.out_dir / f"{image.stem}.memory.safetensors" if req.save_memory else None
        ws = req.worldscore / image.stem if req.worldscore else None
        plot = req.plot / f"{image.stem}.png" if req.plot else None
        report = None
    else:
        video = req.out if req.out is not None else (req.out_dir / f"{image.stem}.mp4")
        frames = Path(req.frames_dir) if isinstance(req.frames_dir, Path) else (
            video.with_name(video.stem + "_frames") if req.frames_dir else None)
        memory = Path(req.save_memory) if isinstance(req.save_memory, Path) else (
            video.with_suffix(".memory.safetensors") if req.save_memory else None)
        ws, plot = req.worldscore, req.plot
        report = req.report
    warped = video.with_name(video.stem + "_warped.mp4") if req.save_warped else None
    return OutputOptions(video=video, report=report, frames_dir=frames, warped=warped, memory=memory,
                         worldscore_dir=ws, plot=plot, crf=req.crf)


def render(
    images: Sequence[str | Path],
    traj: TrajectoryOptions | str,
    output: OutputRequest,
    config: PipelineConfig | None = None,
    options: RenderOptions | None = None,
    *,
    depth_file: str | Path | None = None,
    memory_from: str | Path | None = None,
    progress: ProgressCallback | None = None,
    on_item: Callable[[ItemResult, int, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    pipeline: Pipeline | None = None,
) -> BatchResult:
    """Render one video per image: the library call behind ``mirage render``.

    Args:
        images: image files and/or folders of images.
        traj: a TrajectoryOptions or just the ``--traj`` string.
        output: where outputs go (``out`` for one image, ``out_dir`` for several).
        config: what is fixed while models are loaded (default :class:`PipelineConfig`).
        options: per-video settings (default :class:`RenderOptions`).
        depth_file: a depth map for the (single) input image instead of the depth model.
        memory_from: a saved memory to continue from (single input).
        progress: chunk/step progress callback; on_item: called after each input (result, index, total).
        rank, world_size: data-parallel share (torchrun): this process renders ``shard(images, rank, world_size)``.
        pipeline: a loaded :class:`Pipeline` to render with (models loaded once for several calls); ``config``
            is then its config (or left out).
    Returns:
        BatchResult with one ItemResult per input of this rank. Never raises for a single input's failure in a batch.
    Raises:
        InputError / TrajectoryError: bad options, or (one image) an unreadable image or a trajectory that does not
            resolve for it: checked by :func:`check_input` before any model loads. In a batch such inputs are
            marked failed, and models load only if some input remains.
    """
    if pipeline is not None:
        if config is not None and config != pipeline.config:
            raise InputError("render: config differs from the given pipeline's config; pass one of them")
        config = pipeline.config
    config = config or PipelineConfig()
    options = _options_for(options or RenderOptions(), output)
    check_pipeline_config(config)  # settings first: a bad option fails before any input is read or model loaded
    check_render_options(options)
    from mirage.hub import parse_preset

    parse_preset(config.preset)
    traj = TrajectoryOptions(spec=traj) if isinstance(traj, str) else traj
    paths = collect_images(images)
    batch = _batch_mode(len(paths), output)
    if batch and output.out_dir is None:
        raise InputError(f"render: {len(paths)} inputs need --out-dir DIR (not -o FILE)")
    if not batch and output.out is not None and output.out.suffix.lower() != ".mp4":
        raise InputError(f"-o {output.out}: the output must end in .mp4")
    if (depth_file is not None or memory_from is not None) and len(paths) > 1:
        raise InputError("--depth / --memory-from: apply to one image; render several images without them")
    if batch and output.report is not None:
        raise InputError(f"--report {output.report}: applies to one image; in a batch each report is written beside "
                         "its MP4 (<name>.json), drop --report")
    mine = shard(paths, rank, world_size)
    result = BatchResult()
    todo: list[tuple[Path, OutputOptions]] = []
    for image in mine:
        planned = plan_output(image, output, inputs=len(paths))
        opts = planned.opts
        if planned.done:
            logger.info("%s: %s exists, skipped (--overwrite to redo)", image.name, opts.video)
            _clean_leftovers(opts)
            item = ItemResult(image, opts.video, "skipped", error="output exists (--overwrite to redo)")
            result.items.append(item)
            if on_item:  # visible to the user, not only in the log
                on_item(item, len(result.items) - 1, len(mine))
            continue
        todo.append((image, opts))
    if not todo:
        return result
    # validate every input and the trajectory against it before any model loads (cheap: headers and camera files);
    # the plans are what the pipeline then renders
    early: dict[Path, str] = {}
    plans: dict[Path, InputPlan] = {}
    for image, opts in todo:
        try:
            check_outputs(opts, inputs=_inputs_of(image, traj, depth_file, memory_from))
            plans[image] = check_input(image, traj, options, preset=config.preset, denoiser=config.denoiser,
                                       depth_file=depth_file, memory_from=memory_from)
        except MirageError as e:
            if not batch:
                raise
            early[image] = str(e)
    # the sampling against the pipeline's LoRAs is the same for every input: logged once, in every report
    plans = {k: with_profile_warning(p, config, options, log=i == 0) for i, (k, p) in enumerate(plans.items())}
    pipe = pipeline
    if pipe is None and len(early) < len(todo):
        from mirage.hub import cache_dir
        from mirage.limits import check_cache_dir

        check_cache_dir(cache_dir())
        pipe = Pipeline(config, progress=progress)

    def finished(item: ItemResult, i: int) -> None:
        logger.debug("%s: %s", item.image.name, item.status)
        result.items.append(item)
        if on_item:
            on_item(item, i, len(todo))

    # write-behind: input i's files are written on a thread while input i + 1 renders (the GPU would otherwise
    # wait for the MP4's encode); one write at a time, each holding its output's claim until its files are complete
    writer = ThreadPoolExecutor(1, thread_name_prefix="mirage-write") if (
        batch and output.write_behind and len(todo) > 1) else None
    queue: list[tuple[int, ItemResult | Future]] = []  # finished or being written, in input order, not yet listed

    def deliver(wait: bool) -> None:
        """List the queue's items in input order: up to the first write still in flight, or (``wait``) all."""
        while queue:
            i, item = queue[0]
            if isinstance(item, Future):
                if not wait and not item.done():
                    return
                item = item.result()  # a Ctrl-C while waiting leaves it queued: the handler below waits again
            queue.pop(0)
            finished(item, i)

    try:
        for i, (image, opts) in enumerate(todo):
            got = _render_one(pipe, plans.get(image), image, opts, options, output, batch, early.get(image))
            if isinstance(got, _Rendered):
                try:
                    deliver(wait=True)  # one write at a time: the previous one completes before this one starts
                    if writer is None:
                        queue.append((i, _write_one(got, batch)))
                    else:
                        with interrupts_deferred():  # a write submitted is a write listed
                            queue.append((i, writer.submit(_write_one, got, batch)))
                finally:
                    if not queue or queue[-1][0] != i:  # not handed on (an error or Ctrl-C first): free its claim
                        got.held.close()
                    got = None  # the next render does not keep this one's frames alive
            else:
                queue.append((i, got))
            deliver(wait=False)
        deliver(wait=True)
    except BaseException as e:  # a write in flight completes (whole files or none) and is listed, then the batch stops
        with contextlib.suppress(BaseException):
            deliver(wait=True)
        if isinstance(e, KeyboardInterrupt):
            result.interrupted = True
            raise BatchInterrupted(result) from None
        raise
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
    return result


@dataclass
class _Rendered:
    """An input rendered, its files not yet written: it holds its output's claim (``held``) until they are."""

    image: Path
    opts: OutputOptions
    result: RenderResult | None  # None once written
    held: contextlib.ExitStack
    render_s: float


def _render_one(pipe, plan: InputPlan | None, image: Path, opts: OutputOptions, options: RenderOptions,
                output: OutputRequest, batch: bool, early: str | None) -> ItemResult | _Rendered:
    """Render one input under the claim (lock) on its output; a batch turns its MirageError into a failed item."""
    t0 = time.perf_counter()
    held = contextlib.ExitStack()
    try:
        if early is not None:
            raise InputError(early)
        assert pipe is not None
        held.enter_context(claim(opts.video))
        # another process may have finished it while this one rendered earlier inputs
        if not output.overwrite and is_done(opts):
            held.close()
            return ItemResult(image, opts.video, "skipped", error="output exists (--overwrite to redo)")
        for f in _output_files(opts):  # temporary files a killed run left (nobody else holds the claim)
            if remove_part_files(f):
                logger.info("%s: removed the temporary files of an interrupted run", f)
        return _Rendered(image, opts, pipe.render(plan, options=options), held, time.perf_counter() - t0)
    except BaseException as e:
        held.close()
        return _failed(e, image, opts, batch, time.perf_counter() - t0)


def _write_one(r: _Rendered, batch: bool) -> ItemResult:
    """Write a rendered input's files (then release its claim). Its ``seconds`` are the render's and the write's."""
    t0 = time.perf_counter()
    try:
        with r.held:  # the write is host work: timed on the host clock (it may overlap the next render's GPU work)
            write_outputs(r.result, r.opts, timer=StageTimer(torch.device("cpu")))
        scores = {k: v for k, v in r.result.report.scores.items() if k not in ("per_frame", "revisit_pairs")}
    except BaseException as e:
        return _failed(e, r.image, r.opts, batch, r.render_s + time.perf_counter() - t0)
    finally:
        r.result = None  # written: the frames, reads and memory go now, not when the batch ends
    return ItemResult(r.image, r.opts.video, "done", seconds=r.render_s + time.perf_counter() - t0, scores=scores)


def _failed(e: BaseException, image: Path, opts: OutputOptions, batch: bool, seconds: float) -> ItemResult:
    """A batch's item for a MirageError (a single input re-raises it, as anything else)."""
    if isinstance(e, OutputBusy) and batch:  # another batch on the same --out-dir renders it: share the work
        return ItemResult(image, opts.video, "skipped", error=str(e), seconds=seconds)
    if isinstance(e, MirageError) and batch:  # CUDA out of memory arrives as a RuntimeFailure naming the stage
        return ItemResult(image, opts.video, "failed", error=str(e), seconds=seconds)
    raise e


def _clean_leftovers(opts: OutputOptions) -> None:
    """Remove the temporary files a killed run left beside a finished output, if no live process claims it."""
    try:
        with claim(opts.video):
            for f in _output_files(opts):
                if remove_part_files(f):
                    logger.info("%s: removed the temporary files of an interrupted run", f)
    except OutputBusy:
        pass  # another process works on it: its temporary files are its own


def is_done(opts: OutputOptions) -> bool:
    """An output is done when its report (written last) parses and its MP4 holds the frames the report names.

    A 0-byte or truncated MP4 (a killed encoder, a full disk) is not done, whatever lies beside it.
    """
    import json

    report = opts.report or default_report_path(opts.video)
    try:
        if not opts.video.is_file() or opts.video.stat().st_size == 0 or not report.is_file():
            return False
        d = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    frames = d.get("frames") if isinstance(d, dict) else None
    if not isinstance(frames, int) or frames < 1:
        return False
    from mirage.video import mp4_frame_count

    return mp4_frame_count(opts.video) == frames


def _output_files(opts: OutputOptions) -> list[Path]:
    files = [opts.video, opts.report or default_report_path(opts.video)]
    return files + [p for p in (opts.warped, opts.memory, opts.plot) if p is not None]


def _inputs_of(image: Path, traj: TrajectoryOptions, depth_file, memory_from) -> dict[str, Path]:
    """The files a render reads, by the option that names them."""
    inputs = {"input image": Path(image)}
    if depth_file is not None:
        inputs["--depth"] = Path(depth_file)
    if memory_from is not None:
        inputs["--memory-from"] = Path(memory_from)
    if Path(traj.spec).exists():
        inputs["--traj"] = Path(traj.spec)
    return inputs


def _real(p: Path) -> Path:
    return Path(p).expanduser().resolve()  # symlinks followed, for existing and new paths alike


def check_outputs(opts: OutputOptions, inputs: dict[str, Path]) -> None:
    """Refuse, before any model loads, an output that would overwrite an input or another output of the same
    run (symlinks resolved), an output folder that is a file, and a frames folder holding images mirage did not
    write. mirage never overwrites or deletes a file it did not write."""
    from mirage.video import check_frames_dir

    files = {"output video": opts.video, ("--report" if opts.report else "report"): opts.report or
             default_report_path(opts.video)}
    if opts.warped is not None:
        files["--save-warped"] = opts.warped
    if opts.memory is not None:
        files["--save-memory"] = opts.memory
    if opts.plot is not None:
        if opts.plot.suffix.lower() != ".png":
            raise InputError(f"--plot {opts.plot}: the plot is a PNG; give a path ending in .png")
        files["--plot"] = opts.plot
    folders = {}
    if opts.frames_dir is not None:
        folders["--frames-dir"] = opts.frames_dir
    if opts.worldscore_dir is not None:
        folders["--worldscore"] = opts.worldscore_dir
    for what, p in {**files, **folders}.items():
        _check_output_path(p, what)
    real_in = {what: _real(p) for what, p in inputs.items()}
    seen: dict[Path, str] = {}
    for what, p in files.items():
        rp = _real(p)
        if rp.is_dir():
            raise InputError(f"{what} {p}: is a folder; pass a file path")
        for in_what, ip in real_in.items():
            if rp == ip or (ip.is_dir() and rp.exists() and rp.is_relative_to(ip)):
                raise InputError(f"{what} {p}: would overwrite the {in_what} {inputs[in_what]}; choose another path")
        if rp in seen:
            raise InputError(f"{what} {p}: is also the {seen[rp]} of this run; choose another path")
        seen[rp] = what
    for what, p in folders.items():
        rp = _real(p)
        if rp.exists() and not rp.is_dir():
            raise InputError(f"{what} {p}: exists as a file; pass a folder path")
        for in_what, ip in real_in.items():
            if rp == ip:
                raise InputError(f"{what} {p}: is the {in_what}; choose another folder")
        for f, fwhat in seen.items():
            if f == rp:
                raise InputError(f"{what} {p}: is also the {fwhat} of this run; choose another path")
    if opts.frames_dir is not None:
        check_frames_dir(opts.frames_dir)
    if opts.worldscore_dir is not None:
        check_frames_dir(Path(opts.worldscore_dir) / "frames", "--worldscore")


def _check_output_path(path: Path, what: str = "output") -> None:
    """The nearest existing ancestor folder of an output must be a folder (checked before any model loads)."""
    path = Path(path)
    for anc in (path.parent, *path.parent.parents):
        if anc.exists():
            if not anc.is_dir():
                raise InputError(f"{what} {path}: {anc} is a file, not a folder; choose another output path")
            return


def _options_for(options: RenderOptions, output: OutputRequest) -> RenderOptions:
    """The per-video settings that follow from the requested outputs."""
    from dataclasses import replace

    options = replace(options, keep_reads=options.keep_reads or output.save_warped)
    if output.save_memory:  # a saved memory must hold the last chunk's revealed content too
        options = replace(options, write_back_last=True)
    return options
