"""Trajectory presets: small YAML files of camera-motion segments, resolved to a :class:`Trajectory`.

A preset file (``trajectories/<name>.yaml`` in the repository, installed as ``mirage/data/trajectories/``)::

    name: tour                 # optional, defaults to the file name
    description: pan left, then truck left, then pull out
    frames: 49                 # total frames (Wan wants 4k + 1)
    fps: 16
    fov: 60                    # optional: horizontal FoV in degrees when the image has no intrinsics
    easing: smooth             # linear | smooth (per segment, overridable)
    segments:
      - {kind: pan, angle: -20}
      - {kind: truck, distance: -0.2, share: 2}
      - {kind: dolly, distance: -0.3}

Conventions (OpenCV axes: x right, y down, z forward; see ``docs/conventions.md``):

- Frame 0 is the input camera: ``w2c[0] = I``. The world frame is frame 0's camera frame.
- Each segment starts where the previous one ended, and its motion is expressed in the frame of the camera it
  starts from (a ``truck`` after a ``pan`` moves along the panned camera's x axis).
- Distances are fractions of ``scene_depth`` (the median scene depth, supplied at resolve time), so one preset
  fits a room and a landscape. Angles are degrees.
- Signs: ``dolly`` + moves forward (+z), ``truck`` + moves right (+x), ``pedestal`` + moves up (-y),
  ``pan`` + turns right (scene content moves left in the image), ``tilt`` + looks up, ``roll`` + turns the camera
  clockwise in the image, ``orbit`` ``yaw`` + moves the camera right around the pivot and ``pitch`` + moves it up
  (the pivot stays at the image centre), ``zoom`` ``factor`` > 1 zooms in (focal length x factor).
- Time: the path parameter runs 0 -> 1 over the frames; each segment gets a part proportional to its ``share``.
  Within a segment the motion follows its ``easing`` (``smooth`` = smoothstep ``3t^2 - 2t^3``: the camera starts
  and stops gently; ``linear``: constant speed).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from mirage._check import check_shape
from mirage.camera import (
    axis_angle_to_rotmat,
    euler_to_rotmat,
    intrinsics_from_fov,
    invert_rigid,
    look_at_w2c,
    make_rigid,
    quat_to_rotmat,
    rotmat_to_quat,
    slerp,
)
from mirage.data import trajectories_dir
from mirage.errors import InputError, TrajectoryError
from mirage.limits import MAX_FRAMES, echo, read_bounded
from mirage.trajectory.types import Trajectory

logger = logging.getLogger("mirage")

PRESETS_ENV = "MIRAGE_PRESETS_DIR"
DEFAULT_FRAMES = 49  # Wan 2.1 generates 4k + 1 frames; 49 = 3 s at 16 fps, one chunk of 13 latent frames
DEFAULT_FPS = 16.0  # Wan 2.1's native frame rate
DEFAULT_FOV_DEG = 60.0  # horizontal FoV used when neither the image (K) nor the preset gives one
_DTYPE = torch.float64  # trajectories are resolved in float64 (Trajectory stores float64)


class SegmentKind(str, Enum):
    """The kinds of camera-motion segment a preset can chain."""

    ORBIT = "orbit"
    DOLLY = "dolly"
    TRUCK = "truck"
    PEDESTAL = "pedestal"
    PAN = "pan"
    TILT = "tilt"
    ROLL = "roll"
    ZOOM = "zoom"
    DOLLY_ZOOM = "dolly_zoom"
    SPIRAL = "spiral"
    KEYFRAMES = "keyframes"


class Easing(str, Enum):
    """Time profile of a segment: ``linear`` (constant speed) or ``smooth`` (smoothstep ease in and out)."""

    LINEAR = "linear"
    SMOOTH = "smooth"


# --------------------------------------------------------------------------------------------------------------
# field declarations: every field carries its validation rule in ``metadata``


def _num(default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
         le: float | None = None, optional: bool = False) -> Any:
    """A finite float field with an optional range (checked when a YAML file is loaded)."""
    return field(default=default, metadata={"type": "float", "gt": gt, "ge": ge, "lt": lt, "le": le,
                                            "optional": optional})


def _share() -> Any:
    return _num(1.0, gt=0.0)


def _easing() -> Any:
    return field(default=None, metadata={"type": "easing", "optional": True})


@dataclass(frozen=True)
class OrbitSegment:
    """Move around a pivot on the optical axis, keeping it at the image centre."""

    kind: ClassVar[SegmentKind] = SegmentKind.ORBIT
    yaw: float = _num(0.0, ge=-720.0, le=720.0)  # degrees around the pivot's vertical; + moves the camera right
    pitch: float = _num(0.0, ge=-89.0, le=89.0)  # degrees around the pivot's horizontal; + moves the camera up
    pivot_depth: float = _num(1.0, gt=0.0)  # pivot distance in front of the camera, x scene depth
    share: float = _share()  # relative duration of this segment among the file's segments
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class DollySegment:
    """Move along the camera's z axis."""

    kind: ClassVar[SegmentKind] = SegmentKind.DOLLY
    distance: float = _num(0.3)  # x scene depth; + forward (dolly in), - backward (dolly out)
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class TruckSegment:
    """Move along the camera's x axis."""

    kind: ClassVar[SegmentKind] = SegmentKind.TRUCK
    distance: float = _num(0.2)  # x scene depth; + right, - left
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class PedestalSegment:
    """Move along the camera's y axis."""

    kind: ClassVar[SegmentKind] = SegmentKind.PEDESTAL
    distance: float = _num(0.2)  # x scene depth; + up (camera -y), - down
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class PanSegment:
    """Rotate in place about the camera's y axis."""

    kind: ClassVar[SegmentKind] = SegmentKind.PAN
    angle: float = _num(30.0, ge=-360.0, le=360.0)  # degrees; + turns right (content moves left in the image)
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class TiltSegment:
    """Rotate in place about the camera's x axis."""

    kind: ClassVar[SegmentKind] = SegmentKind.TILT
    angle: float = _num(15.0, ge=-89.0, le=89.0)  # degrees; + looks up
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class RollSegment:
    """Rotate in place about the optical axis."""

    kind: ClassVar[SegmentKind] = SegmentKind.ROLL
    angle: float = _num(15.0, ge=-360.0, le=360.0)  # degrees; + turns the camera clockwise in the image
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class ZoomSegment:
    """Change the focal length in place (geometric interpolation: constant zoom speed)."""

    kind: ClassVar[SegmentKind] = SegmentKind.ZOOM
    factor: float = _num(1.5, ge=0.1, le=10.0)  # focal length at the end / at the start; > 1 zooms in
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class DollyZoomSegment:
    """Move along z while changing the focal length so the pivot keeps its image size (the "Vertigo" shot)."""

    kind: ClassVar[SegmentKind] = SegmentKind.DOLLY_ZOOM
    distance: float = _num(-0.5)  # x scene depth; + forward (focal shrinks), - backward (focal grows)
    pivot_depth: float = _num(1.0, gt=0.0)  # depth of the subject that keeps its size, x scene depth
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class SpiralSegment:
    """Circle around the optical axis with a radius growing from 0, while moving forward, looking at a pivot."""

    kind: ClassVar[SegmentKind] = SegmentKind.SPIRAL
    radius: float = _num(0.1, ge=0.0)  # final distance from the start axis, x scene depth
    turns: float = _num(1.0, gt=0.0, le=20.0)  # full circles over the segment
    distance: float = _num(0.2)  # forward travel, x scene depth (+ forward); must stay short of the pivot
    pivot_depth: float = _num(1.0, gt=0.0)  # the point looked at, on the start axis, x scene depth
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


@dataclass(frozen=True)
class Keyframe:
    """One waypoint of a ``keyframes`` segment, in the frame of the segment's start camera.

    The orientation is either ``look_at`` (a point to face, world up = the start camera's -y) or
    ``yaw``/``pitch``/``roll`` (degrees, same signs as ``pan``/``tilt``/``roll``; all 0 keeps the start orientation).
    """

    position: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), metadata={"type": "vec3"})  # x scene depth
    look_at: tuple[float, float, float] | None = field(default=None, metadata={"type": "vec3", "optional": True})  # x scene depth
    yaw: float = _num(0.0, ge=-360.0, le=360.0)  # degrees, + turns right
    pitch: float = _num(0.0, ge=-89.0, le=89.0)  # degrees, + looks up
    roll: float = _num(0.0, ge=-360.0, le=360.0)  # degrees, + clockwise in the image
    zoom: float = _num(1.0, ge=0.1, le=10.0)  # focal length factor relative to the segment's start


@dataclass(frozen=True)
class KeyframesSegment:
    """Pass through waypoints: Catmull-Rom curve for the centre, SLERP for the rotation, evenly timed.

    The start camera is the implicit first waypoint, so the path is continuous with the previous segment.
    """

    kind: ClassVar[SegmentKind] = SegmentKind.KEYFRAMES
    keys: tuple[Keyframe, ...] = field(default=(), metadata={"type": "keys"})  # waypoints after the start camera
    share: float = _share()  # relative duration of this segment
    easing: Easing | None = _easing()  # None: the file's easing


Segment = (OrbitSegment | DollySegment | TruckSegment | PedestalSegment | PanSegment | TiltSegment | RollSegment
           | ZoomSegment | DollyZoomSegment | SpiralSegment | KeyframesSegment)

SEGMENT_TYPES: dict[SegmentKind, type] = {
    cls.kind: cls
    for cls in (OrbitSegment, DollySegment, TruckSegment, PedestalSegment, PanSegment, TiltSegment, RollSegment,
                ZoomSegment, DollyZoomSegment, SpiralSegment, KeyframesSegment)
}


@dataclass(frozen=True)
class PresetSpec:
    """A loaded (validated) preset file; :func:`resolve_preset` turns it into cameras."""

    name: str  # the preset's name (the file stem unless the file sets ``name``)
    segments: tuple[Segment, ...]  # chained camera motions, at least one
    description: str = ""  # one line for ``mirage traj list``
    frames: int = DEFAULT_FRAMES  # total frames of the resolved trajectory (>= 2)
    fps: float = DEFAULT_FPS  # frames per second
    fov: float | None = None  # horizontal FoV (degrees) used when the caller has no intrinsics; None: 60
    easing: Easing = Easing.SMOOTH  # default time profile of the segments
    path: Path | None = None  # the file it was loaded from


@dataclass(frozen=True)
class PresetInfo:
    """One line of :func:`list_presets`."""

    name: str  # what :func:`find_preset` and ``mirage render --traj`` accept (the file stem)
    description: str
    path: Path


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


def presets_dir() -> Path:
    """The folder of presets: ``$MIRAGE_PRESETS_DIR`` if set, else the shipped ones (:func:`mirage.data.trajectories_dir`)."""
    env = os.environ.get(PRESETS_ENV)
    if env:
        d = Path(env).expanduser()
        if not d.is_dir():
            raise TrajectoryError(f"{PRESETS_ENV}={env}: no such folder; point it at a folder of preset .yaml files or unset it")
        return d
    return trajectories_dir()


def list_presets() -> list[PresetInfo]:
    """All presets in :func:`presets_dir`, sorted by name. A broken preset file raises (never skipped)."""
    out = []
    for p in sorted(presets_dir().glob("*.yaml")):
        spec = load_preset(p)
        out.append(PresetInfo(name=p.stem, description=spec.description, path=p))
    return out


def preset_names() -> list[str]:
    """Names of the shipped presets (file stems), sorted."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def find_preset(name: str) -> Path:
    """Path of the preset called ``name``; unknown names raise :class:`TrajectoryError` listing the valid ones."""
    p = presets_dir() / f"{name}.yaml"
    if name and "/" not in name and "\\" not in name and p.is_file():
        return p
    raise TrajectoryError(f"preset {echo(name)}: no such preset; valid names: {', '.join(preset_names())}")


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


def load_preset(path: str | Path) -> PresetSpec:
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
    return PresetSpec(name=name, segments=segments, path=path, **kw)


# --------------------------------------------------------------------------------------------------------------
# resolving


@dataclass(frozen=True)
class _Motion:
    """Camera motion in the frame of a segment's start camera.

    R: (T, 3, 3) camera-to-start rotation (columns: camera axes); C: (T, 3) centres, scene units;
    focal: (T,) focal-length factor relative to the start.
    """

    R: torch.Tensor
    C: torch.Tensor
    focal: torch.Tensor


def _ease(t: torch.Tensor, easing: Easing) -> torch.Tensor:
    if easing is Easing.SMOOTH:
        return t * t * (3.0 - 2.0 * t)
    return t


def _rot(axis: tuple[float, float, float], angle_rad: torch.Tensor) -> torch.Tensor:
    """Rotations (T, 3, 3) about a fixed camera axis by ``angle_rad`` (T,)."""
    a = torch.tensor(axis, dtype=_DTYPE).expand(*angle_rad.shape, 3)
    return axis_angle_to_rotmat(a, angle_rad)


def _ypr(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, roll_deg: torch.Tensor) -> torch.Tensor:
    """Yaw/pitch/roll in degrees (preset signs) -> (T, 3, 3) rotations (``euler_to_rotmat``)."""
    return euler_to_rotmat(torch.deg2rad(yaw_deg), torch.deg2rad(pitch_deg), torch.deg2rad(roll_deg))


def _motion(seg: Segment, t: torch.Tensor, depth: float) -> _Motion:
    """Motion of one segment at eased times ``t`` (T,) in [0, 1]; ``depth`` = scene depth (units of the result)."""
    T = t.shape[0]
    eye = torch.eye(3, dtype=_DTYPE).expand(T, 3, 3).clone()
    zero = torch.zeros(T, 3, dtype=_DTYPE)
    one = torch.ones(T, dtype=_DTYPE)
    z = torch.zeros_like(t)
    if isinstance(seg, (DollySegment, TruckSegment, PedestalSegment)):
        axis = {DollySegment: (0.0, 0.0, 1.0), TruckSegment: (1.0, 0.0, 0.0), PedestalSegment: (0.0, -1.0, 0.0)}[type(seg)]
        C = t[:, None] * torch.tensor(axis, dtype=_DTYPE) * (seg.distance * depth)  # (T, 3)
        return _Motion(eye, C, one)
    if isinstance(seg, PanSegment):
        return _Motion(_ypr(seg.angle * t, z, z), zero, one)
    if isinstance(seg, TiltSegment):
        return _Motion(_ypr(z, seg.angle * t, z), zero, one)
    if isinstance(seg, RollSegment):
        return _Motion(_ypr(z, z, seg.angle * t), zero, one)
    if isinstance(seg, ZoomSegment):
        return _Motion(eye, zero, seg.factor ** t)
    if isinstance(seg, OrbitSegment):
        p = seg.pivot_depth * depth
        # moving right around the pivot is a rotation by -yaw about +y; moving up is -pitch about +x
        R = _rot((0.0, 1.0, 0.0), torch.deg2rad(-seg.yaw * t)) @ _rot((1.0, 0.0, 0.0), torch.deg2rad(-seg.pitch * t))
        pivot = torch.tensor([0.0, 0.0, p], dtype=_DTYPE)
        C = pivot - (R @ pivot)  # (T, 3): the pivot stays at (0, 0, p) in every camera
        return _Motion(R, C, one)
    if isinstance(seg, DollyZoomSegment):
        p = seg.pivot_depth * depth
        dz = seg.distance * depth * t  # (T,)
        C = torch.stack([z, z, dz], dim=-1)
        return _Motion(eye, C, (p - dz) / p)  # pivot image size ~ f / (p - dz) stays constant
    if isinstance(seg, SpiralSegment):
        p = seg.pivot_depth * depth
        ang = 2.0 * math.pi * seg.turns * t
        r = seg.radius * depth * t  # radius grows from 0, so the segment starts at its start camera
        C = torch.stack([r * torch.cos(ang), -r * torch.sin(ang), seg.distance * depth * t], dim=-1)  # (T, 3)
        up = torch.tensor([0.0, -1.0, 0.0], dtype=_DTYPE)
        target = torch.tensor([0.0, 0.0, p], dtype=_DTYPE)
        w2c = look_at_w2c(C, target.expand_as(C), up.expand_as(C))
        return _Motion(w2c[:, :3, :3].transpose(-1, -2), C, one)
    if isinstance(seg, KeyframesSegment):
        return _keyframes_motion(seg, t, depth)
    raise AssertionError(f"unhandled segment {seg!r}")  # programming error


def _keyframes_motion(seg: KeyframesSegment, t: torch.Tensor, depth: float) -> _Motion:
    n = len(seg.keys)
    P = torch.zeros(n + 1, 3, dtype=_DTYPE)  # (n+1, 3) waypoints, start camera first
    R = torch.eye(3, dtype=_DTYPE).repeat(n + 1, 1, 1)  # (n+1, 3, 3)
    zoom = torch.ones(n + 1, dtype=_DTYPE)
    up = torch.tensor([0.0, -1.0, 0.0], dtype=_DTYPE)
    for i, key in enumerate(seg.keys, start=1):
        P[i] = torch.tensor(key.position, dtype=_DTYPE) * depth
        zoom[i] = key.zoom
        if key.look_at is not None:
            target = torch.tensor(key.look_at, dtype=_DTYPE) * depth
            try:
                R[i] = look_at_w2c(P[i], target, up)[:3, :3].T
            except InputError:
                raise TrajectoryError(
                    f"keyframes key {i - 1}: look_at {key.look_at} is straight above or below position {key.position} "
                    "(or equal to it); move the target"
                ) from None
        else:
            R[i] = _ypr(*(torch.tensor([v], dtype=_DTYPE) for v in (key.yaw, key.pitch, key.roll)))[0]
    u = t * n
    idx = u.floor().long().clamp(0, n - 1)  # (T,) interval index
    s = u - idx  # (T,) position within the interval, [0, 1]
    # centre: uniform Catmull-Rom through the waypoints, end points repeated
    Pe = torch.cat([P[:1], P, P[-1:]])  # (n+3, 3)
    p0, p1, p2, p3 = Pe[idx], Pe[idx + 1], Pe[idx + 2], Pe[idx + 3]
    s1 = s[:, None]
    C = 0.5 * (2 * p1 + (p2 - p0) * s1 + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s1**2 + (3 * p1 - p0 - 3 * p2 + p3) * s1**3)
    # rotation: SLERP between consecutive waypoints (constant angular speed within an interval)
    q = rotmat_to_quat(R)  # (n+1, 4)
    qt = torch.empty(t.shape[0], 4, dtype=_DTYPE)
    for i in range(n):
        sel = idx == i
        if bool(sel.any()):
            qt[sel] = slerp(q[i], q[i + 1], s[sel])
    focal = torch.exp(torch.log(zoom[idx]) * (1 - s) + torch.log(zoom[idx + 1]) * s)
    return _Motion(quat_to_rotmat(qt), C, focal)


def _base_intrinsics(spec: PresetSpec, width: int, height: int, K: torch.Tensor | None) -> torch.Tensor:
    if K is not None:
        check_shape(K, (3, 3), "K")
        K = K.detach().to(device="cpu", dtype=_DTYPE)
        if not bool(torch.isfinite(K).all()) or float(K[0, 0]) <= 0 or float(K[1, 1]) <= 0:
            raise TrajectoryError(f"K: intrinsics must be finite with positive focal lengths, got {K.tolist()}")
        if spec.fov is not None:
            logger.debug("preset %s: fov %.1f ignored, the image's intrinsics are used", spec.name, spec.fov)
        return K
    fov = spec.fov if spec.fov is not None else DEFAULT_FOV_DEG
    return intrinsics_from_fov(fov, width, height, dtype=_DTYPE)


def resolve_preset(
    spec: PresetSpec,
    *,
    width: int,
    height: int,
    K: torch.Tensor | None = None,
    scene_depth: float = 1.0,
    frames: int | None = None,
    fps: float | None = None,
) -> Trajectory:
    """Cameras of a preset for one image.

    Args:
        spec: a loaded preset (:func:`load_preset`).
        width, height: image size in pixels.
        K: (3, 3) pixel intrinsics of the input image, or None to use the preset's ``fov`` or, without one, a
            60 degree horizontal FoV (principal point at the image centre).
        scene_depth: median scene depth in scene units (> 0); every preset distance is multiplied by it.
        frames: total frames (>= 2), overriding the preset's ``frames``.
        fps: frames per second, overriding the preset's ``fps``.

    Returns:
        Trajectory with ``K`` (N, 3, 3) float64 pixels and ``w2c`` (N, 4, 4) float64 OpenCV, ``w2c[0] = I``,
        translations in the units of ``scene_depth``.
    """
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise TrajectoryError(f"image size {width}x{height}: must be positive integers; pass --size WxH or --image")
    if not (isinstance(scene_depth, (int, float)) and math.isfinite(scene_depth) and scene_depth > 0):
        raise TrajectoryError(f"scene_depth: {scene_depth} must be a positive finite number (median scene depth)")
    n = spec.frames if frames is None else frames
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise TrajectoryError(f"--frames: {n} is fewer than 2 or not an integer; a video needs at least 2 frames")
    try:
        MAX_FRAMES.check(n, "--frames" if frames is not None else f"preset {spec.name} frames")
    except InputError as e:
        raise TrajectoryError(e.message) from None
    fps_v = spec.fps if fps is None else float(fps)
    if not (math.isfinite(fps_v) and fps_v > 0):
        raise TrajectoryError(f"--fps: {fps_v} must be a positive finite number")
    K0 = _base_intrinsics(spec, width, height, K)

    shares = torch.tensor([seg.share for seg in spec.segments], dtype=_DTYPE)
    bounds = torch.cat([torch.zeros(1, dtype=_DTYPE), torch.cumsum(shares, 0) / shares.sum()])  # (S+1,)
    bounds[-1] = 1.0
    s_all = torch.linspace(0.0, 1.0, n, dtype=_DTYPE)  # (N,) path parameter per frame

    R_out = torch.empty(n, 3, 3, dtype=_DTYPE)
    C_out = torch.empty(n, 3, dtype=_DTYPE)
    f_out = torch.empty(n, dtype=_DTYPE)
    R0 = torch.eye(3, dtype=_DTYPE)  # start pose of the current segment (camera-to-world)
    C0 = torch.zeros(3, dtype=_DTYPE)
    f0 = 1.0
    assigned = torch.zeros(n, dtype=torch.bool)
    for k, seg in enumerate(spec.segments):
        easing = seg.easing or spec.easing
        a, b = float(bounds[k]), float(bounds[k + 1])
        sel = (s_all <= b) & ~assigned if k < len(spec.segments) - 1 else ~assigned
        if bool(sel.any()):
            t = ((s_all[sel] - a) / (b - a)).clamp(0.0, 1.0)
            m = _motion(seg, _ease(t, easing), scene_depth)
            R_out[sel] = R0 @ m.R
            C_out[sel] = C0 + m.C @ R0.T
            f_out[sel] = f0 * m.focal
            assigned |= sel
        end = _motion(seg, torch.ones(1, dtype=_DTYPE), scene_depth)  # the next segment starts here
        R0, C0, f0 = R0 @ end.R[0], C0 + R0 @ end.C[0], f0 * float(end.focal[0])

    w2c = invert_rigid(make_rigid(R_out, C_out))  # (N, 4, 4)
    Ks = K0.expand(n, 3, 3).clone()  # (N, 3, 3)
    Ks[:, 0, 0] = K0[0, 0] * f_out
    Ks[:, 0, 1] = K0[0, 1] * f_out
    Ks[:, 1, 1] = K0[1, 1] * f_out
    try:
        return Trajectory(K=Ks, w2c=w2c, width=width, height=height, fps=fps_v, source=f"preset:{spec.name}")
    except TrajectoryError as e:
        raise TrajectoryError(f"preset {spec.name} ({spec.path}): {e.message}") from None


__all__ = [
    "DEFAULT_FOV_DEG",
    "DEFAULT_FPS",
    "DEFAULT_FRAMES",
    "Easing",
    "Keyframe",
    "PresetInfo",
    "PresetSpec",
    "SegmentKind",
    "SEGMENT_TYPES",
    "find_preset",
    "list_presets",
    "load_preset",
    "preset_names",
    "presets_dir",
    "resolve_preset",
]
