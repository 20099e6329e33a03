"""Small shape/value checks for public entry points (in the spirit of kornia.core.check)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mirage.errors import InputError


def check_shape(x: torch.Tensor, shape: Sequence[int | str], name: str) -> None:
    """Raise :class:`InputError` unless ``x`` has ``shape``.

    ``shape`` entries are ints (exact) or strings (any size; "*" also allows any number of leading dims when it
    is the first entry).
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    dims = list(shape)
    if dims and dims[0] == "*":
        dims = dims[1:]
        ok = x.ndim >= len(dims) and all(
            isinstance(d, str) or x.shape[x.ndim - len(dims) + i] == d for i, d in enumerate(dims)
        )
    else:
        ok = x.ndim == len(dims) and all(isinstance(d, str) or x.shape[i] == d for i, d in enumerate(dims))
    if not ok:
        want = "(" + ", ".join(str(d) for d in shape) + ")"
        raise InputError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
