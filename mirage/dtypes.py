"""The closed sets of precision names (``--dtype``, ``--vae-dtype``): one Enum each, used by the library's checks
and shown by the CLI as its choices (where ``auto`` is added and resolved)."""

from __future__ import annotations

from enum import Enum

import torch

from mirage.errors import InputError


class DType(str, Enum):
    """Model dtype of the transformer, text encoder and depth model (``--dtype``)."""

    FLOAT32 = "float32"  # CPU default, reference precision
    BFLOAT16 = "bfloat16"  # GPU default
    FLOAT16 = "float16"

    @property
    def torch_dtype(self) -> torch.dtype:
        return _TORCH[self]


_TORCH = {DType.FLOAT32: torch.float32, DType.BFLOAT16: torch.bfloat16, DType.FLOAT16: torch.float16}


class VaeDType(str, Enum):
    """Dtype of the VAE (``--vae-dtype``)."""

    FLOAT32 = "float32"  # as diffusers' Wan examples
    MODEL = "model"  # the model dtype (bf16 decode on the GPU: faster, half the memory)


def parse_dtype(value: str | DType, option: str = "--dtype") -> DType:
    """``value`` as a :class:`DType`; anything else raises a one-line :class:`InputError` listing the choices."""
    try:
        return DType(value)
    except ValueError:
        raise InputError(f"{option}: {value!r} is not one of {', '.join(d.value for d in DType)}") from None


def parse_vae_dtype(value: str | VaeDType, option: str = "--vae-dtype") -> VaeDType:
    """``value`` as a :class:`VaeDType`; anything else raises a one-line :class:`InputError` listing the choices."""
    try:
        return VaeDType(value)
    except ValueError:
        raise InputError(f"{option}: {value!r} is not one of {', '.join(d.value for d in VaeDType)}") from None


__all__ = ["DType", "VaeDType", "parse_dtype", "parse_vae_dtype"]
