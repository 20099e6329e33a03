"""Camera preset files: finding them, reading their YAML (bounded: aliases and merge keys are capped) and
validating it against :mod:`mirage.trajectory.preset_schema`, with ``file:line: key: problem; fix`` errors."""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from mirage.data import trajectories_dir
from mirage.errors import InputError, TrajectoryError
from mirage.limits import echo, read_bounded
from mirage.trajectory.preset_schema import (
    SEGMENT_TYPES,
    CameraPresetInfo,
    CameraPresetSpec,
    DollyZoomSegment,
    Easing,
    Keyframe,
    Segment,
    SegmentKind,
    SpiralSegment,
)

PRESETS_ENV = "MIRAGE_PRESETS_DIR"

_TOP_FIELDS: dict[str, dict[str, Any]] = {
    "name": {"type": "str"},
    "description": {"type": "str"},
    "frames": {"type": "int", "ge": 2},
    "fps": {"type": "float", "gt": 0.0, "le": 1000.0},
    "fov": {"type": "float", "gt": 1.0, "lt": 179.0, "optional": True},
    "easing": {"type": "easing"},
    "segments": {"type": "segments"},
}


# --------------------------------------------------------------------------------------------------------------
# presets directory


def camera_presets_dir() -> Path:
    """The folder of presets: ``$MIRAGE_PRESETS_DIR`` if set, else the shipped ones (:func:`mirage.data.trajectories_dir`)."""
    env = os.environ.get(PRESETS_ENV)
    if env:
        d = Path(env).expanduser()
        if not d.is_dir():
            raise TrajectoryError(f"{PRESETS_ENV}={env}: no such folder; point it at a folder of preset .yaml files or unset it")
        return d
    return trajectories_dir()


def list_camera_presets() -> list[CameraPresetInfo]:
    """All camera presets in :func:`camera_presets_dir`, sorted by name. A broken preset file raises (never skipped)."""
    out = []
    for p in sorted(camera_presets_dir().glob("*.yaml")):
        spec = load_camera_preset(p)
        out.append(CameraPresetInfo(name=p.stem, description=spec.description, path=p))
    return out


def camera_preset_names() -> list[str]:
    """Names of the shipped presets (file stems), sorted."""
    return sorted(p.stem for p in camera_presets_dir().glob("*.yaml"))


def find_camera_preset(name: str) -> Path:
    """Path of the preset called ``name``; unknown names raise :class:`TrajectoryError` listing the valid ones."""
    p = camera_presets_dir() / f"{name}.yaml"
    if name and "/" not in name and "\\" not in name and p.is_file():
        return p
    raise TrajectoryError(f"preset {echo(name)}: no such preset; valid names: {', '.join(camera_preset_names())}")


# --------------------------------------------------------------------------------------------------------------
# YAML with line numbers


class _Map(dict):
    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list):
    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember their (1-based) lines."""


#: Most entries one YAML mapping may hold after merge keys (``<<: *a``) are expanded: nested merges double at each
#: level, so without a bound a few hundred bytes expand to billions of entries (a "billion laughs" file).
MAX_MAPPING_ENTRIES = 10_000
#: Most aliases (``*name``) one preset file may use; a real preset needs a handful.
MAX_ALIASES = 1_000


def _compose_node(self, parent, index):  # type: ignore[no-untyped-def]
    if self.check_event(yaml.events.AliasEvent):
        self._aliases = getattr(self, "_aliases", 0) + 1
        if self._aliases > MAX_ALIASES:
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} aliases", event.start_mark)
    return yaml.composer.Composer.compose_node(self, parent, index)


def _merge_size(node: yaml.Node, seen: set[int]) -> int:
    """Entries a mapping holds once its merge keys are expanded, counted without expanding them (stops early)."""
    if not isinstance(node, yaml.MappingNode) or id(node) in seen:
        return 0
    seen = seen | {id(node)}
    n = 0
    for k, v in node.value:
        if k.tag == "tag:yaml.org,2002:merge":
            subs = v.value if isinstance(v, yaml.SequenceNode) else [v]
            for sub in subs:
                n += _merge_size(sub, seen)
                if n > MAX_MAPPING_ENTRIES:
                    return n
        else:
            n += 1
    return n


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    if _merge_size(node, set()) > MAX_MAPPING_ENTRIES:
        raise yaml.constructor.ConstructorError(
            None, None, f"a mapping expands to more than {MAX_MAPPING_ENTRIES} entries (nested merge keys)",
            node.start_mark)
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {echo(key)}", k_node.start_mark)
        out[key] = loader.construct_object(v_node, deep=True)
        out.key_lines[key] = k_node.start_mark.line + 1
    return out


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(c, deep=True) for c in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [c.start_mark.line + 1 for c in node.value]
    return out


_LineLoader.compose_node = _compose_node  # type: ignore[method-assign]
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------------------------
# validation


class _Ctx:
    """Where a value sits: file, dotted key and line, for one-line errors."""

    def __init__(self, path: Path, key: str, line: int):
        self.path, self.key, self.line = path, key, line

    def fail(self, what: str) -> TrajectoryError:
        return TrajectoryError(f"{self.path}:{self.line}: {self.key}: {what}")


def _check_value(value: Any, rule: dict[str, Any], ctx: _Ctx) -> Any:
    typ = rule["type"]
    if value is None:
        if rule.get("optional"):
            return None
        raise ctx.fail(f"expected a {typ}, got null; give a value or remove the key")
    if typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.fail(f"expected a number, got {echo(value)} ({type(value).__name__})")
        v = float(value)
        if not math.isfinite(v):
            raise ctx.fail(f"{v} is not a finite number; give a finite value")
        _check_range(v, rule, ctx)
        return v
    if typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.fail(f"expected an integer, got {echo(value)} ({type(value).__name__})")
        _check_range(value, rule, ctx)
        return int(value)
    if typ == "str":
        if not isinstance(value, str):
            raise ctx.fail(f"expected a string, got {echo(value)} ({type(value).__name__})")
        return value
    if typ == "easing":
        allowed = [e.value for e in Easing]
        if value not in allowed:
            raise ctx.fail(f"{echo(value)} is not an easing; allowed: {', '.join(allowed)}")
        return Easing(value)
    if typ == "vec3":
        if not isinstance(value, list) or len(value) != 3:
            raise ctx.fail(f"expected a list of 3 numbers [x, y, z], got {echo(value)}")
        return tuple(_check_value(v, {"type": "float"}, _Ctx(ctx.path, f"{ctx.key}[{i}]", ctx.line))
                     for i, v in enumerate(value))
    raise AssertionError(f"unknown rule type {typ}")  # programming error, not user input


def _check_range(v: float, rule: dict[str, Any], ctx: _Ctx) -> None:
    lo_gt, lo_ge, hi_lt, hi_le = rule.get("gt"), rule.get("ge"), rule.get("lt"), rule.get("le")
    ok = ((lo_gt is None or v > lo_gt) and (lo_ge is None or v >= lo_ge)
          and (hi_lt is None or v < hi_lt) and (hi_le is None or v <= hi_le))
    if not ok:
        lo = f"({lo_gt}" if lo_gt is not None else (f"[{lo_ge}" if lo_ge is not None else "(-inf")
        hi = f"{hi_lt})" if hi_lt is not None else (f"{hi_le}]" if hi_le is not None else "inf)")
        raise ctx.fail(f"{v} is outside the allowed range {lo}, {hi}")


def _check_keys(m: _Map, allowed: list[str], path: Path, where: str) -> None:
    for k in m:
        if k not in allowed:
            key = f"{where}.{k}" if where else str(k)
            raise TrajectoryError(
                f"{path}:{m.key_lines[k]}: unknown key {echo(key)}; allowed keys: {', '.join(allowed)}"
            )


def _build_dataclass(cls: type, m: Any, path: Path, where: str, line: int, skip: tuple[str, ...] = ()) -> Any:
    if not isinstance(m, _Map):
        raise TrajectoryError(f"{path}:{line}: {where}: expected a mapping (key: value), got {echo(m)}")
    flds = [f for f in fields(cls) if f.name not in skip]
    _check_keys(m, [f.name for f in flds] + list(skip), path, where)
    kwargs = {}
    for f in flds:
        if f.name not in m:
            continue
        ctx = _Ctx(path, f"{where}.{f.name}", m.key_lines[f.name])
        if f.metadata["type"] == "keys":
            kwargs[f.name] = _build_keys(m[f.name], ctx)
        else:
            kwargs[f.name] = _check_value(m[f.name], dict(f.metadata), ctx)
    return kwargs


def _build_keys(value: Any, ctx: _Ctx) -> tuple[Keyframe, ...]:
    if not isinstance(value, _Seq) or len(value) == 0:
        raise ctx.fail("expected a non-empty list of keyframes ({position: [x, y, z], look_at: [...] | yaw/pitch/roll})")
    keys = []
    for i, item in enumerate(value):
        where = f"{ctx.key}[{i}]"
        kw = _build_dataclass(Keyframe, item, ctx.path, where, value.item_lines[i])
        if "look_at" in kw and kw["look_at"] is not None and any(k in kw for k in ("yaw", "pitch", "roll")):
            raise TrajectoryError(
                f"{ctx.path}:{value.item_lines[i]}: {where}: give either look_at or yaw/pitch/roll, not both"
            )
        key = Keyframe(**kw)
        if key.look_at is not None:
            d = [a - b for a, b in zip(key.look_at, key.position, strict=True)]
            if math.hypot(d[0], d[2]) <= 1e-6 * max(1.0, math.hypot(*d)):
                raise TrajectoryError(
                    f"{ctx.path}:{value.item_lines[i]}: {where}.look_at: {list(key.look_at)} is straight above, below "
                    f"or at position {list(key.position)}; move the target off the vertical"
                )
        keys.append(key)
    return tuple(keys)


def _build_segment(item: Any, path: Path, index: int, line: int) -> Segment:
    where = f"segments[{index}]"
    if not isinstance(item, _Map):
        raise TrajectoryError(f"{path}:{line}: {where}: expected a mapping with a 'kind' key, got {echo(item)}")
    allowed = [k.value for k in SegmentKind]
    if "kind" not in item:
        raise TrajectoryError(f"{path}:{item.line}: {where}: missing key 'kind'; allowed kinds: {', '.join(allowed)}")
    kind = item["kind"]
    if kind not in allowed:
        raise TrajectoryError(
            f"{path}:{item.key_lines['kind']}: {where}.kind: unknown kind {echo(kind)}; allowed kinds: {', '.join(allowed)}"
        )
    cls = SEGMENT_TYPES[SegmentKind(kind)]
    kw = _build_dataclass(cls, item, path, where, item.line, skip=("kind",))
    seg = cls(**kw)
    # cross-field checks
    if isinstance(seg, (DollyZoomSegment, SpiralSegment)) and seg.distance >= 0.95 * seg.pivot_depth:
        raise TrajectoryError(
            f"{path}:{item.line}: {where}: distance {seg.distance} reaches the pivot at pivot_depth {seg.pivot_depth}; "
            "keep distance below 0.95 x pivot_depth"
        )
    return seg


def load_camera_preset(path: str | Path) -> CameraPresetSpec:
    """Read and validate a preset YAML file.

    Raises:
        TrajectoryError: one line ``file:line: key: problem; fix`` for malformed YAML, unknown keys, wrong types,
            impossible values (frames < 2, fov outside (1, 179), non-finite numbers) and unknown segment kinds.
    """
    path = Path(path)
    if not path.exists():
        raise TrajectoryError(f"preset file {path}: not found; check the path or run `mirage traj list`")
    try:
        text = read_bounded(path, "preset file").decode("utf-8")
    except InputError as e:
        raise TrajectoryError(e.message) from None
    except UnicodeDecodeError as e:
        raise TrajectoryError(f"preset file {path}: cannot be read ({_one_line(e)}); check the file") from None
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise TrajectoryError(f"{path}:{line}: invalid YAML ({echo(_one_line(e.problem or e.context or e), 200)}); "
                              "fix the syntax") from None
    except yaml.YAMLError as e:
        raise TrajectoryError(f"{path}: invalid YAML ({echo(_one_line(e), 200)}); fix the syntax") from None
    except RecursionError:
        raise TrajectoryError(f"{path}: YAML nested too deeply; a preset is a flat mapping with a segments list") from None
    if not isinstance(doc, _Map):
        raise TrajectoryError(f"{path}:1: a preset must be a mapping with a 'segments' list, got {type(doc).__name__}")
    _check_keys(doc, list(_TOP_FIELDS), path, "")
    kw: dict[str, Any] = {}
    for key, rule in _TOP_FIELDS.items():
        if key not in doc or key == "segments":
            continue
        kw[key] = _check_value(doc[key], rule, _Ctx(path, key, doc.key_lines[key]))
    if "segments" not in doc:
        raise TrajectoryError(f"{path}:{doc.line}: missing key 'segments' (a list of {{kind: ...}} mappings)")
    segs = doc["segments"]
    if not isinstance(segs, _Seq) or len(segs) == 0:
        raise TrajectoryError(
            f"{path}:{doc.key_lines['segments']}: segments: expected a non-empty list of {{kind: ...}} mappings, got {echo(segs)}"
        )
    segments = tuple(_build_segment(item, path, i, segs.item_lines[i]) for i, item in enumerate(segs))
    name = kw.pop("name", path.stem)
    return CameraPresetSpec(name=name, segments=segments, path=path, **kw)


__all__ = [
    "MAX_ALIASES",
    "MAX_MAPPING_ENTRIES",
    "PRESETS_ENV",
    "camera_preset_names",
    "camera_presets_dir",
    "find_camera_preset",
    "list_camera_presets",
    "load_camera_preset",
]
