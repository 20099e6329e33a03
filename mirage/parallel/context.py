"""Context parallel: one long video's transformer tokens split over the ranks of the process group.

The video transformer's token sequence is split across the ranks with diffusers' own context-parallel hooks
(``ContextParallelConfig``; Ulysses all-to-all and/or ring attention). diffusers' ``WanTransformer3DModel`` ships a
``_cp_plan``; ``WanVACETransformer3DModel`` does not, so :func:`cp_plan_for` holds mirage's plan for it (tested
against the single-process output on CPU with gloo). Nothing here touches CUDA or ``torch.distributed`` at import.
See ``docs/scale-out.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch

from mirage.errors import InputError
from mirage.parallel.environment import DistEnv

logger = logging.getLogger("mirage")

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
                         "--nproc-per-node N and call mirage.parallel.init_distributed() first")
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


def bench_context_parallel(cfg, env: DistEnv, *, attention_backend: str | None = None, progress=None):
    """``mirage bench``'s sweep (:func:`mirage.bench.run_bench`) with the video transformer split over the ranks.

    Every rank calls this with the same ``cfg`` (its ``config.device`` the rank's device, :func:`init_rank`):
    settings context parallel cannot run with are refused before any model loads, the pipeline is built
    (:func:`mirage.bench.build_pipeline`), split when the job has several ranks (a world of 1 is the unsplit
    baseline) and measured. The process group stays up (call ``shutdown_distributed(barrier=True)`` once every
    rank is done); rank 0 reports.

    Args:
        cfg: a :class:`mirage.bench.BenchConfig`.
        env: this rank's place in the job (:func:`init_rank`).
        attention_backend, progress: to :func:`context_parallel` and :func:`mirage.bench.run_bench`.
    Returns:
        the :class:`mirage.bench.BenchReport`; its header adds ``context_parallel_world_size`` and
        ``context_parallel`` (the split, :class:`ContextParallelInfo` as a dict; None with one rank).
    Raises:
        InputError: the errors of :func:`check_context_parallel` and :func:`context_parallel`.
    """
    from mirage.bench import build_pipeline, run_bench

    check_context_parallel(cfg.config)  # before any model loads
    pipeline = build_pipeline(cfg)
    info = None
    if env.world_size > 1:
        info = enable_pipeline_context_parallel(pipeline, attention_backend=attention_backend)
    report = run_bench(cfg, progress=progress, pipeline=pipeline)
    report.header["context_parallel_world_size"] = env.world_size
    report.header["context_parallel"] = asdict(info) if info is not None else None
    del pipeline
    if torch.device(cfg.config.device).type == "cuda":
        torch.cuda.empty_cache()  # the next call's pipeline starts from free memory
    return report
