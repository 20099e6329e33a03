"""Camera presets: the schema of a preset YAML file (segment kinds, their fields and ranges) as frozen dataclasses.

A camera preset file (``trajectories/<name>.yaml`` in the repository, installed as ``mirage/data/trajectories/``)::

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

Every field carries its validation rule in ``metadata``; :mod:`mirage.trajectory.preset_files` reads a file against
these rules, :mod:`mirage.trajectory.preset_resolve` turns a :class:`CameraPresetSpec` into cameras (the sign and
time conventions are written there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

DEFAULT_FRAMES = 49  # Wan 2.1 generates 4k + 1 frames; 49 = 3 s at 16 fps, one chunk of 13 latent frames
DEFAULT_FPS = 16.0  # Wan 2.1's native frame rate
DEFAULT_FOV_DEG = 60.0  # horizontal FoV used when neither the image (K) nor the preset gives one

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
class CameraPresetSpec:
    """A loaded (validated) camera preset file; :func:`~mirage.trajectory.resolve_camera_preset` turns it into
    cameras."""

    name: str  # the preset's name (the file stem unless the file sets ``name``)
    segments: tuple[Segment, ...]  # chained camera motions, at least one
    description: str = ""  # one line for ``mirage traj list``
    frames: int = DEFAULT_FRAMES  # total frames of the resolved trajectory (>= 2)
    fps: float = DEFAULT_FPS  # frames per second
    fov: float | None = None  # horizontal FoV (degrees) used when the caller has no intrinsics; None: 60
    easing: Easing = Easing.SMOOTH  # default time profile of the segments
    path: Path | None = None  # the file it was loaded from


@dataclass(frozen=True)
class CameraPresetInfo:
    """One line of :func:`~mirage.trajectory.list_camera_presets`."""

    name: str  # what :func:`~mirage.trajectory.find_camera_preset` and ``mirage render --traj`` accept (the file stem)
    description: str
    path: Path


__all__ = [
    "DEFAULT_FOV_DEG",
    "DEFAULT_FPS",
    "DEFAULT_FRAMES",
    "SEGMENT_TYPES",
    "CameraPresetInfo",
    "CameraPresetSpec",
    "Easing",
    "Keyframe",
    "Segment",
    "SegmentKind",
]
