"""Where this process sits in a ``torchrun`` job: its ranks, its process group and its device.

torchrun starts one process per GPU and sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; :meth:`DistEnv.from_env` reads them, :func:`init_distributed` starts the process group (``env://``)
and :func:`shutdown_distributed` ends it. Nothing here touches CUDA or ``torch.distributed`` at import.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from mirage.errors import InputError

logger = logging.getLogger("mirage")

#: Set (unless already set) before an NCCL process group starts: NVLink multicast (NVLS) stays off; the lent
#: multi-GPU machines require it (and it only affects some all-reduce algorithms, not correctness).
NCCL_MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

#: Default collective timeout: a gather waits for the slowest rank's whole shard, which can take hours. torchrun
#: tears the group down when a worker dies, so a long timeout does not hang a crashed job.
DEFAULT_TIMEOUT_S = 48 * 3600.0


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


def torch_distributed():
    """``torch.distributed``, imported on first use.

    Raises:
        InputError: this torch build has no distributed support.
    """
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
    dist = torch_distributed()
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


def init_rank(device: str, *, env: DistEnv | None = None) -> DistEnv:
    """Join the torchrun job for work every rank does together (context parallel): the process group and this
    rank's device.

    Args:
        device: the configured device, already resolved ("cpu", "cuda", "cuda:N"; the CLI resolves "auto").
        env: the job layout (default: :meth:`DistEnv.from_env`); a world of 1 starts no group.
    Returns:
        ``env`` with ``device`` set to this rank's device (:func:`rank_device`: "cuda" -> ``cuda:LOCAL_RANK``);
        the group's backend follows it (gloo for "cpu", else nccl when torch sees CUDA).
    Raises:
        InputError: the errors of :func:`init_distributed` and :func:`rank_device`.
    """
    env = init_distributed("gloo" if device == "cpu" else None, env=env)
    return replace(env, device=rank_device(device, env))
