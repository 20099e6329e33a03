"""Scale-out under ``torchrun``: data-parallel batches and context-parallel attention for one long video.

- :mod:`mirage.parallel.environment`: where this process sits in the job (:class:`DistEnv`), the process group
  (:func:`init_distributed`, :func:`shutdown_distributed`) and each rank's device (:func:`rank_device`,
  :func:`init_rank`).
- :mod:`mirage.parallel.data`: many images, one share per rank, one merged ``summary.json``
  (:func:`render_distributed`); :func:`render_batch` is the call behind ``mirage render`` (one process or many).
- :mod:`mirage.parallel.context`: one video's transformer tokens split over the ranks (:func:`context_parallel`,
  mirage's plan for ``WanVACETransformer3DModel``, :func:`bench_context_parallel`).

Nothing here touches CUDA or ``torch.distributed`` at import. See ``docs/scale-out.md``.
"""

from mirage.parallel.context import (
    ContextParallelInfo,
    bench_context_parallel,
    check_context_parallel,
    context_parallel,
    cp_plan_for,
    enable_pipeline_context_parallel,
)
from mirage.parallel.data import (
    SUMMARY_NAME,
    DistributedBatchResult,
    merge_records,
    render_batch,
    render_distributed,
    summary_path,
)
from mirage.parallel.environment import (
    NCCL_MULTICAST_OFF,
    DistEnv,
    init_distributed,
    init_rank,
    rank_device,
    shutdown_distributed,
)

__all__ = [
    "DistEnv", "init_distributed", "init_rank", "shutdown_distributed", "rank_device",
    "render_batch", "render_distributed", "DistributedBatchResult", "merge_records", "summary_path", "SUMMARY_NAME",
    "context_parallel", "cp_plan_for", "check_context_parallel", "enable_pipeline_context_parallel",
    "bench_context_parallel", "ContextParallelInfo", "NCCL_MULTICAST_OFF",
]
