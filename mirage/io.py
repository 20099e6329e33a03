"""Atomic file writing: every output is written to a temporary name beside it, then renamed.

A killed run therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from mirage.errors import InputError, OutputBusy, RuntimeFailure

logger = logging.getLogger("mirage")


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
    tmp_path: Path | None = None
    try:
        with interrupts_deferred():  # a Ctrl-C while the temp file is made arrives once it is, and removes it
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.part-",
                                           suffix=suffix if suffix is not None else path.suffix, dir=parent)
            except OSError as e:
                raise InputError(f"output {path}: cannot write in {parent} ({e.strerror}); "
                                 "choose a writable path") from None
            os.close(fd)
            tmp_path = Path(tmp)
    except KeyboardInterrupt:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise
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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back for a few statements that must not be cut in two (a temp file made but not yet
    owned by a ``try``): a SIGINT in the block is delivered when it ends. Only in the main thread (elsewhere signals
    are not delivered anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])
            else:
                raise KeyboardInterrupt


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


# ---------------------------------------------------------------------------------------------- claims and leftovers


def part_files(path: str | Path) -> list[Path]:
    """Temporary files of :func:`atomic_path` for ``path`` (``.NAME.part-*``), e.g. left by a killed run."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.part-*"))


def remove_part_files(path: str | Path) -> int:
    """Remove the leftover temporary files of ``path``; call it only while holding :func:`claim` on the output
    (then no live process is writing them). Returns how many were removed."""
    n = 0
    for p in part_files(path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _holder(lock: Path) -> dict | None:
    """The lock's {"pid", "host"}, or None when it is unreadable or malformed (treated as stale)."""
    try:
        d = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and isinstance(d.get("pid"), int) else None


def _remove_dead_lock_temps(lock: Path, host: str) -> None:
    """Remove the temporary files of ``lock`` (``.NAME.lock.part-PID@HOST-XXXX``) whose maker on this host is no
    longer running: a SIGKILL between making one and linking it leaves it (no handler runs). Live makers' are kept."""
    for p in part_files(lock):
        owner = p.name[len(f".{lock.name}.part-"):].rpartition("-")[0]  # "PID@HOST"
        pid, _, where = owner.partition("@")
        if pid.isdigit() and where == host and not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def _link_lock(lock: Path, me: dict, path: Path) -> bool:
    """Create ``lock`` holding ``me`` atomically (a temp file hard-linked onto it); False if it exists already."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        # the temp names its owner, so that one left by a killed process is known dead (_remove_dead_lock_temps)
        fd, tmp = tempfile.mkstemp(prefix=f".{lock.name}.part-{me['pid']}@{me['host']}-", dir=lock.parent)
    except OSError as e:
        raise InputError(f"output {path}: cannot write in {lock.parent} ({e.strerror or e}); "
                         "choose a writable path") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        try:
            os.link(tmp, lock)  # atomic create-with-content: fails if the lock exists
            return True
        except FileExistsError:
            return False
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def claim(path: str | Path) -> Iterator[Path]:
    """Hold the lock ``.NAME.lock`` beside output ``path`` for the block, so that two mirage processes never
    render the same output (two batches on one ``--out-dir`` share the work instead of doing it twice).

    The lock holds the owner's pid and host; a lock whose owner on this host is dead (SIGKILL, power loss) is
    taken over. Raises :class:`OutputBusy` when a live process holds it.
    """
    path = Path(path)
    lock = lock_path(path)
    created = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]  # removed again if left empty
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        taken = False
        try:
            with interrupts_deferred():  # the temp file and the lock appear and the temp goes, uncut by a Ctrl-C
                taken = _link_lock(lock, me, path)
        except KeyboardInterrupt:  # delivered as the block ended: a lock just taken is not held by anyone yet
            if taken:
                lock.unlink(missing_ok=True)
            raise
        if taken:
            _remove_dead_lock_temps(lock, me["host"])
            break
        held = _holder(lock)
        if held is not None and held.get("host") != me["host"]:
            raise OutputBusy(f"output {path}: locked by pid {held['pid']} on host {held.get('host')} ({lock}); "
                             "wait for it, or delete the lock file if no mirage runs there")
        if held is not None and _pid_alive(held["pid"]) and held["pid"] != me["pid"]:
            raise OutputBusy(f"output {path}: being rendered by another mirage process (pid {held['pid']}, lock "
                             f"{lock}); wait for it or render other inputs")
        # stale: its owner died without releasing it. Move it aside first, so that a lock another process took
        # meanwhile is never deleted: if the moved file is not the one judged stale, put it back.
        logger.info("output %s: taking over the lock of %s, which is no longer running", path,
                    f"pid {held['pid']}" if held else "an unreadable lock file")
        aside = lock.with_name(f"{lock.name}.stale-{me['pid']}")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            continue
        if _holder(aside) != held:
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock)
        aside.unlink(missing_ok=True)
    else:
        raise OutputBusy(f"output {path}: lock {lock} keeps changing hands; retry")
    try:
        yield lock
    finally:
        if _holder(lock) == me:
            lock.unlink(missing_ok=True)
        for d in created:  # deepest first: a failed render leaves no empty output folder behind
            try:
                d.rmdir()
            except OSError:
                break
