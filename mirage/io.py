"""Atomic file writing: every output is written to a temporary name beside it, then renamed.

A killed run therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mirage.errors import InputError, RuntimeFailure


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds, else delete it.

    Args:
        path: the final file.
        suffix: suffix of the temporary file (defaults to ``path``'s, so format sniffing by extension works).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"output {path}: is a folder; pass a file path")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"output {path}: cannot create folder {parent} ({e.strerror}); choose a writable path") from None
    # the temp name keeps the real suffix last (PyAV, PIL and safetensors pick formats by it)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.part-", suffix=suffix if suffix is not None else path.suffix,
                                   dir=parent)
    except OSError as e:
        raise InputError(f"output {path}: cannot write in {parent} ({e.strerror}); choose a writable path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give outputs the usual permissions
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise RuntimeFailure(f"output {path}: write failed ({e.strerror or e}); check free disk space and permissions") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
