"""Camera trajectories: camera presets, camera files, and the one dispatcher that turns either into a
:class:`Trajectory`.

``load_trajectory("orbit", width=832, height=480)`` resolves a shipped camera preset; ``load_trajectory("cams.txt",
...)`` reads a camera file (COLMAP, RealEstate10K, nerfstudio, WorldScore, mirage JSON), re-bases it so frame 0 is
the input camera, and fits it to the image size. ``open_trajectory`` is its first half: a camera file comes back
read (:class:`CameraFileSource`), a preset waiting for the scene depth (:class:`CameraPresetSource`).

Modules: ``types`` (:class:`Trajectory`); camera files: ``formats`` (detection, entry point), ``colmap``,
``file_readers`` (RealEstate10K, nerfstudio, WorldScore, mirage JSON); camera presets: ``preset_schema`` (what a
preset file may say), ``preset_files`` (finding and reading preset YAML), ``preset_resolve`` (segments -> poses);
``source`` (the dispatcher); ``plot``.
"""

from __future__ import annotations

from mirage.trajectory.formats import TrajFormat, detect_format, read_camera_file
from mirage.trajectory.preset_files import (
    camera_preset_names,
    camera_presets_dir,
    find_camera_preset,
    list_camera_presets,
    load_camera_preset,
)
from mirage.trajectory.preset_resolve import resolve_camera_preset
from mirage.trajectory.preset_schema import CameraPresetInfo, CameraPresetSpec
from mirage.trajectory.source import (
    CameraFileSource,
    CameraPresetSource,
    TrajectorySource,
    load_trajectory,
    open_trajectory,
)
from mirage.trajectory.types import Trajectory, TrajectoryStats

__all__ = [
    "CameraFileSource",
    "CameraPresetInfo",
    "CameraPresetSource",
    "CameraPresetSpec",
    "TrajFormat",
    "Trajectory",
    "TrajectorySource",
    "TrajectoryStats",
    "camera_preset_names",
    "camera_presets_dir",
    "detect_format",
    "find_camera_preset",
    "list_camera_presets",
    "load_camera_preset",
    "load_trajectory",
    "open_trajectory",
    "read_camera_file",
    "resolve_camera_preset",
]
