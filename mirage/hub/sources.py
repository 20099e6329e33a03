"""Where a component is loaded from (Hub repo, local folder, embedded, tiny) and how loading failures read.

Every failure of a Hub or folder load becomes one :class:`~mirage.errors.ModelError` line that names the component,
the repo and revision (or folder), the file, and the fix.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirage.errors import InputError, ModelError
from mirage.hub.presets import Component, ComponentSpec, Preset, SourceKind

TINY_VERSION = "tiny-v2"  # bump when the tiny builds change, so stale tiny folders are not reused


def cache_dir() -> Path:
    """mirage's own cache (tiny models, prompt embeddings): ``$MIRAGE_CACHE`` or ``~/.cache/mirage``."""
    env = os.environ.get("MIRAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mirage"


def tiny_dir(root: Path | None = None) -> Path:
    """Folder of the tiny preset's components (``<cache>/tiny-v2``)."""
    return (root if root is not None else cache_dir()) / TINY_VERSION


def embedded_dir(name: str) -> Path:
    """Folder of a component shipped inside the package (``taesd``)."""
    from mirage import data

    if name != "taesd":
        raise ModelError(f"embedded component {name!r} does not exist; the package ships only 'taesd'")
    return data.taesd_dir()


@dataclass(frozen=True)
class ResolvedSource:
    """Where one component is actually loaded from (recorded in the run report).

    Attributes:
        component: the component's role.
        source: Hub repo id, or an absolute local folder.
        revision: the Hub revision asked for (None for local folders).
        subfolder: folder inside ``source`` (None: ``source`` is the component folder itself).
        local: True for local folders.
    """

    component: Component
    source: str
    revision: str | None
    subfolder: str | None
    local: bool

    def describe(self) -> str:
        where = self.source + (f"/{self.subfolder}" if self.subfolder else "")
        return where if self.local else f"{where}@{self.revision or 'main'}"

    @property
    def folder(self) -> Path:
        """The component folder of a local source."""
        return Path(self.source) / (self.subfolder or "")

    def repo_path(self, filename: str) -> str:
        """``filename`` as a path inside the repo (``transformer/config.json``)."""
        return f"{self.subfolder}/{filename}" if self.subfolder else filename


_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<rev>[\w./-]+?))?(:(?P<sub>[\w./-]+))?$")


def parse_override(component: Component, value: str, default_subfolder: str | None) -> ResolvedSource:
    """Resolve an override: a local folder, or ``owner/name[@revision][:subfolder]`` on the Hub.

    A local folder is used as the component folder itself; a folder without a config file but with a
    ``<default_subfolder>/`` (or ``<component>/``) folder inside is taken as a whole pipeline folder.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        sub = None
        if not any((path / n).is_file() for n in ("config.json", "tokenizer_config.json", "scheduler_config.json")):
            sub = next((s for s in (default_subfolder, component.value) if s and (path / s).is_dir()), None)
        return ResolvedSource(component, str(path.resolve()), None, sub, True)
    m = _HUB_ID.match(value)
    if m is None or value.startswith((".", "/", "~")):
        raise InputError(
            f"--{component.value.replace('_', '-')} {value}: not an existing folder nor a Hub id; "
            "pass a local folder or owner/name[@revision][:subfolder]"
        )
    return ResolvedSource(component, m["repo"], m["rev"] or "main", m["sub"], False)


def resolve(spec: ComponentSpec, overrides: dict[str, str], tiny_root: Path | None = None) -> ResolvedSource:
    """Where ``spec`` loads from: its override if given, else the preset's own source."""
    if spec.name.value in overrides:
        return parse_override(spec.name, overrides[spec.name.value], spec.subfolder)
    if spec.kind is SourceKind.TINY:
        return ResolvedSource(spec.name, str(tiny_dir(tiny_root) / spec.repo_id), None, None, True)
    if spec.kind is SourceKind.EMBEDDED:
        return ResolvedSource(spec.name, str(embedded_dir(spec.repo_id)), None, None, True)
    return ResolvedSource(spec.name, spec.repo_id, spec.revision, spec.subfolder, False)


# ---------------------------------------------------------------------------------------------- failures


def one_line(text: object, limit: int = 160) -> str:
    """``text`` squeezed to one line of at most ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def offline() -> bool:
    """True when huggingface_hub will not reach the Hub (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


def fix_hint(src: ResolvedSource, preset: Preset | None) -> str:
    """The fix for a component that cannot be found: download the preset, or pass a folder."""
    flag = "--" + src.component.value.replace("_", "-")
    p = preset.value if preset is not None else "PRESET"
    return f"run `mirage download {p}` on a machine with internet, or pass a local folder with {flag} PATH"


def where(src: ResolvedSource, filename: str) -> str:
    """``component: repo/sub@revision file F`` (or the folder's file) for messages."""
    if src.local:
        return f"{src.component.value}: {src.folder / filename}"
    return f"{src.component.value}: {src.source}@{src.revision or 'main'} file {src.repo_path(filename)}"


def translate(src: ResolvedSource, filename: str, exc: BaseException, preset: Preset | None) -> ModelError:
    """A huggingface_hub / diffusers / transformers loading exception as one ModelError line."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    at = where(src, filename)
    hint = fix_hint(src, preset)

    def has(t: type) -> bool:
        return any(isinstance(x, t) for x in chain)

    if has(GatedRepoError):
        return ModelError(f"{at}: the repo is gated; accept its licence on the Hub and log in (hf auth login)", hint)
    if has(RepositoryNotFoundError):
        return ModelError(f"{at}: repository not found (or private); check the id", hint)
    if has(RevisionNotFoundError):
        return ModelError(f"{at}: revision {src.revision} not found in the repository; check the revision", hint)
    if has(LocalEntryNotFoundError) or has(OfflineModeIsEnabled) or (not src.local and offline()):
        return ModelError(f"{at} is not in the local Hugging Face cache and the Hub cannot be reached", hint)
    if has(EntryNotFoundError):
        return ModelError(f"{at}: file not found in the repository (is it a safetensors checkpoint?)", hint)
    return ModelError(f"{at}: cannot load ({type(exc).__name__}: {one_line(exc)})", hint)


@contextlib.contextmanager
def translating(src: ResolvedSource, filename: str, preset: Preset | None) -> Iterator[None]:
    """Turn any loading exception raised inside the block into one ModelError line about ``filename``."""
    try:
        yield
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:  # hub errors subclass OSError/HTTPError
        raise translate(src, filename, e, preset) from e
