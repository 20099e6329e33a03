"""Rendering many images: models load once, outputs named after inputs, done outputs skipped, failures collected.

``render`` is the library call behind ``mirage render``: everything the CLI does, without the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirage.errors import InputError, MirageError
from mirage.outputs import OutputOptions, default_report_path, write_outputs
from mirage.pipeline import Pipeline, ProgressCallback, RenderConfig, TrajectoryOptions, check_config
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
    overwrite: bool = False  # re-render outputs that exist
    crf: int = 18


@dataclass
class ItemResult:
    image: Path
    video: Path | None
    status: str  # "done", "skipped", "failed"
    error: str | None = None
    seconds: float = 0.0


@dataclass
class BatchResult:
    items: list[ItemResult] = field(default_factory=list)

    @property
    def failed(self) -> list[ItemResult]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


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
        report = None
    else:
        video = req.out if req.out is not None else (req.out_dir / f"{image.stem}.mp4")
        frames = Path(req.frames_dir) if isinstance(req.frames_dir, Path) else (
            video.with_name(video.stem + "_frames") if req.frames_dir else None)
        memory = Path(req.save_memory) if isinstance(req.save_memory, Path) else (
            video.with_suffix(".memory.safetensors") if req.save_memory else None)
        ws = req.worldscore
        report = req.report
    warped = video.with_name(video.stem + "_warped.mp4") if req.save_warped else None
    return OutputOptions(video=video, report=report, frames_dir=frames, warped=warped, memory=memory,
                         worldscore_dir=ws, crf=req.crf)


def render(
    images: Sequence[str | Path],
    traj: TrajectoryOptions | str,
    output: OutputRequest,
    config: RenderConfig | None = None,
    *,
    depth_file: str | Path | None = None,
    memory_from: str | Path | None = None,
    progress: ProgressCallback | None = None,
    on_item: Callable[[ItemResult, int, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> BatchResult:
    """Render one video per image: the library call behind ``mirage render``.

    Args:
        images: image files and/or folders of images.
        traj: a TrajectoryOptions or just the ``--traj`` string.
        output: where outputs go (``out`` for one image, ``out_dir`` for several).
        config: how to render (defaults: RenderConfig()).
        depth_file: a depth map for the (single) input image instead of the depth model.
        memory_from: a saved memory to continue from (single input).
        progress: chunk/step progress callback; on_item: called after each input (result, index, total).
        rank, world_size: data-parallel share (torchrun): this process renders ``shard(images, rank, world_size)``.
    Returns:
        BatchResult with one ItemResult per input of this rank. Never raises for a single input's failure in a batch.
    Raises:
        InputError / TrajectoryError: bad options, or (one image) an unreadable image or a trajectory that does not
            resolve for it: checked by :func:`check_input` before any model loads. In a batch such inputs are
            marked failed, and models load only if some input remains.
    """
    config = config or RenderConfig()
    check_config(config)  # settings first: a bad option fails before any input is read or model loaded
    from mirage.hub import parse_preset

    parse_preset(config.preset)
    traj = TrajectoryOptions(spec=traj) if isinstance(traj, str) else traj
    paths = collect_images(images)
    batch = len(paths) > 1 or (output.out is None)
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
        opts = _paths_for(image, output, batch)
        # done = the MP4 and its report: the report is written last, so an MP4 alone is an interrupted render
        if opts.video.exists() and (opts.report or default_report_path(opts.video)).exists() and not output.overwrite:
            logger.info("%s: %s exists, skipped (--overwrite to redo)", image.name, opts.video)
            item = ItemResult(image, opts.video, "skipped", error="output exists (--overwrite to redo)")
            result.items.append(item)
            if on_item:  # visible to the user, not only in the log
                on_item(item, len(result.items) - 1, len(mine))
            continue
        todo.append((image, opts))
    if not todo:
        return result
    # validate every input and the trajectory against it before any model loads (cheap: headers and camera files)
    early: dict[Path, str] = {}
    for image, opts in todo:
        try:
            _check_output_path(opts.video)
            check_input(image, traj, config, depth_file=depth_file)
        except MirageError as e:
            if not batch:
                raise
            early[image] = str(e)
    pipe = None
    if len(early) < len(todo):
        pipe = Pipeline(_config_for(config, output), progress=progress)
    for i, (image, opts) in enumerate(todo):
        t0 = time.perf_counter()
        try:
            if image in early:
                raise InputError(early[image])
            assert pipe is not None
            res = pipe.render(image, traj, depth_file=depth_file, memory_from=memory_from)
            timer = StageTimer(pipe.device)
            write_outputs(res, opts, timer=timer)
            item = ItemResult(image, opts.video, "done", seconds=time.perf_counter() - t0)
        except MirageError as e:  # CUDA out of memory arrives as a RuntimeFailure naming the stage (Pipeline.render)
            if not batch:
                raise
            item = ItemResult(image, opts.video, "failed", error=str(e), seconds=time.perf_counter() - t0)
        logger.debug("%s: %s", image.name, item.status)
        result.items.append(item)
        if on_item:
            on_item(item, i, len(todo))
    return result


def _check_output_path(path: Path) -> None:
    """The nearest existing ancestor folder of an output must be a folder (checked before any model loads)."""
    for anc in (path.parent, *path.parent.parents):
        if anc.exists():
            if not anc.is_dir():
                raise InputError(f"output {path}: {anc} is a file, not a folder; choose another output path")
            return


def check_input(image: Path, traj: TrajectoryOptions, config: RenderConfig, *, depth_file=None) -> None:
    """Fail fast, before models load: :func:`mirage.pipeline.plan_inputs` checks the image header, the output size,
    the trajectory (presets and camera files), ``--fov``/``--intrinsics`` and the depth file with the pipeline's own
    rules and messages."""
    from mirage.pipeline import plan_inputs

    plan_inputs(image, traj, config, config.preset, depth_file=depth_file)


def _config_for(config: RenderConfig, output: OutputRequest) -> RenderConfig:
    """The render settings that follow from the requested outputs."""
    from dataclasses import replace

    config = replace(config, keep_reads=config.keep_reads or output.save_warped)
    if output.save_memory:  # a saved memory must hold the last chunk's revealed content too
        config = replace(config, write_back_last=True)
    return config
