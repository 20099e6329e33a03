"""Count the calls that read a tensor back to the host (on CUDA each one waits for the GPU): ``.item()``,
``.tolist()``, ``bool()``/``int()``/``float()`` of a tensor, ``.cpu()``/``.numpy()``, ``nonzero``, ``unique``,
boolean-mask indexing, and indexing with a Python list (its index tensor is copied from pageable host memory to
the device, and such a copy waits for the stream). On the CPU nothing waits, but the same calls are made, so a test
here bounds the host synchronisations a GPU run makes."""

from __future__ import annotations

import collections
import sys

import torch
from torch.overrides import TorchFunctionMode

_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere", "unique",
          "_unique2", "masked_select", "cpu", "numpy", "repeat_interleave", "isin"}


class HostReads(TorchFunctionMode):
    """``with HostReads() as r: ...``; then ``r.count`` and ``r.sites`` (call site -> count, for the message)."""

    def __init__(self):
        super().__init__()
        self.sites: collections.Counter = collections.Counter()

    @property
    def count(self) -> int:
        return sum(self.sites.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        hit = name in _READS
        if name == "__getitem__" and len(args) > 1:
            idx = args[1] if isinstance(args[1], tuple) else (args[1],)
            hit = any((isinstance(i, torch.Tensor) and i.dtype == torch.bool) or isinstance(i, list) for i in idx)
        if hit:
            f = sys._getframe(1)
            while f is not None and "/mirage/" not in f.f_code.co_filename:
                f = f.f_back
            where = f"{f.f_code.co_filename.rsplit('/mirage/', 1)[-1]}:{f.f_lineno}" if f is not None else "?"
            self.sites[f"{name} @ {where}"] += 1
        return func(*args, **(kwargs or {}))
