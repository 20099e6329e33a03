"""Trajectory presets and the dispatcher: analytic direction checks, chaining, scaling, validation errors."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch

from mirage.camera import (
    intrinsics_from_fov,
    invert_rigid,
    make_rigid,
    project_world_to_pixels,
    rotation_angle_deg,
)
from mirage.errors import TrajectoryError
from mirage.trajectory import (
    CameraFileSource,
    CameraPresetSource,
    Trajectory,
    find_camera_preset,
    list_camera_presets,
    load_camera_preset,
    load_trajectory,
    open_trajectory,
    resolve_camera_preset,
)

W, H = 64, 48
DT = torch.float64


def preset(name: str, **kw) -> Trajectory:
    return resolve_camera_preset(load_camera_preset(find_camera_preset(name)), width=W, height=H, **kw)


def from_yaml(tmp_path: Path, text: str, name: str = "p", **kw) -> Trajectory:
    p = tmp_path / f"{name}.yaml"
    p.write_text(textwrap.dedent(text))
    return resolve_camera_preset(load_camera_preset(p), width=W, height=H, **kw)


def centres(t: Trajectory) -> torch.Tensor:
    return t.c2w[:, :3, 3]


def pix(t: Trajectory, xyz_world) -> torch.Tensor:
    """(N, 2) pixel coordinates of one world point in every frame."""
    uv, z = project_world_to_pixels(torch.tensor([xyz_world], dtype=DT), t.K, t.w2c)
    assert bool((z > 0).all())
    return uv[:, 0]


# ---------------------------------------------------------------------------------------------------------------
# shipped presets


REQUIRED = [
    "orbit", "orbit_up", "dolly_in", "dolly_out", "truck_left", "truck_right", "pan_left", "pan_right", "zoom_in",
    "spiral", "push_in", "pull_out", "move_left", "move_right", "orbit_left", "orbit_right", "tour", "walkthrough",
]


def test_shipped_presets_load_and_start_at_identity():
    infos = {p.name: p for p in list_camera_presets()}
    assert set(REQUIRED) <= set(infos)
    for name, info in infos.items():
        assert info.description, name
        t = preset(name)
        assert t.num_frames == 49 and t.fps == 16.0
        assert torch.equal(t.w2c[0], torch.eye(4, dtype=DT)), name
        assert torch.allclose(t.K[0], intrinsics_from_fov(60.0, W, H)), name
        assert t.source == f"preset:{name}"


@pytest.mark.parametrize("frames", [None, 17])
def test_the_input_plans_frame_count_is_what_every_preset_resolves_to_at_any_depth(frames):
    """A render encodes the image for its chunk length before the trajectory resolves (the GPU encodes while the
    host resolves it): the plan's count must be the resolve's, whatever the scene depth and intrinsics."""
    from mirage.config import RenderOptions
    from mirage.inputs import TrajectoryOptions, check_input

    image = Path(__file__).resolve().parents[1] / "examples" / "room" / "image.png"
    for info in list_camera_presets():
        plan = check_input(image, TrajectoryOptions(info.name, frames=frames), RenderOptions(size=(W, H)),
                           preset="tiny")
        K = intrinsics_from_fov(75.0, *plan.source_size).to(DT)
        for depth in (0.3, 7.0):
            assert plan.preset.resolve(*plan.source_size, K, depth).num_frames == plan.num_frames, info.name
        assert plan.num_frames == (frames or 49)


def test_translation_presets_move_the_centre_the_right_way():
    expect = {
        "truck_left": (-0.25, 0, 0), "truck_right": (0.25, 0, 0), "move_left": (-0.3, 0, 0), "move_right": (0.3, 0, 0),
        "dolly_in": (0, 0, 0.3), "dolly_out": (0, 0, -0.4), "push_in": (0, 0, 0.4), "pull_out": (0, 0, -0.4),
    }
    for name, end in expect.items():
        t = preset(name, scene_depth=2.0)
        C = centres(t)
        assert torch.allclose(C[-1], 2.0 * torch.tensor(end, dtype=DT), atol=1e-12), name
        # rotation untouched, monotone motion along the axis
        assert torch.allclose(t.c2w[:, :3, :3], torch.eye(3, dtype=DT).expand(49, 3, 3), atol=1e-12)
        axis = int(torch.tensor(end).abs().argmax())
        steps = (C[1:, axis] - C[:-1, axis]) * math.copysign(1, end[axis])
        assert bool((steps >= 0).all()) and float(steps.sum()) > 0


def test_pan_left_moves_content_right_and_pan_right_left():
    for name, sign in (("pan_left", 1.0), ("pan_right", -1.0)):
        t = preset(name)
        assert torch.allclose(centres(t), torch.zeros(49, 3, dtype=DT), atol=1e-12)
        u = pix(t, (0.0, 0.0, 5.0))[:, 0]  # a point straight ahead of frame 0
        cx = float(t.K[0, 0, 2])
        assert float(u[0]) == pytest.approx(cx)
        # after a 30 degree pan the point sits at cx + sign * f * tan(30)
        assert float(u[-1]) == pytest.approx(cx + sign * float(t.K[0, 0, 0]) * math.tan(math.radians(30)), rel=1e-9)
        assert float(rotation_angle_deg(t.c2w[-1, :3, :3])) == pytest.approx(30.0)


@pytest.mark.parametrize("name,yaw_sign", [("orbit_left", -1), ("orbit_right", 1), ("orbit", 1)])
def test_orbit_moves_around_and_keeps_pivot_centred(name, yaw_sign):
    sd = 2.5
    t = preset(name, scene_depth=sd)
    C = centres(t)
    # 30 degrees around a pivot at 1 x scene depth: centre at (sign * sd sin30, 0, sd (1 - cos30))
    want = torch.tensor([yaw_sign * sd * 0.5, 0.0, sd * (1 - math.cos(math.radians(30)))], dtype=DT)
    assert torch.allclose(C[-1], want, atol=1e-9)
    # the pivot stays at the principal point, at constant distance
    uv = pix(t, (0.0, 0.0, sd))
    assert torch.allclose(uv, t.K[:, :2, 2], atol=1e-9)
    assert torch.allclose((C - torch.tensor([0, 0, sd], dtype=DT)).norm(dim=-1), torch.full((49,), sd, dtype=DT))


def test_orbit_up_moves_up_and_looks_down_at_the_pivot():
    t = preset("orbit_up")
    C = centres(t)
    assert float(C[-1, 1]) == pytest.approx(-math.sin(math.radians(20)))  # y down: up is -y
    assert torch.allclose(pix(t, (0.0, 0.0, 1.0)), t.K[:, :2, 2], atol=1e-9)
    assert float(t.c2w[-1, 1, 2]) > 0  # the optical axis points down (+y) toward the pivot


def test_zoom_changes_focal_by_the_factor_geometrically(tmp_path):
    t = from_yaml(tmp_path, """
        frames: 5
        easing: linear
        segments: [{kind: zoom, factor: 4}]
    """)
    f = t.K[:, 0, 0] / t.K[0, 0, 0]
    assert torch.allclose(f, torch.tensor([1, 2**0.5, 2, 2**1.5, 4], dtype=DT))
    assert torch.allclose(t.K[:, 1, 1] / t.K[0, 1, 1], f)
    assert torch.allclose(t.K[:, :2, 2], t.K[0, :2, 2].expand(5, 2))  # principal point kept
    assert float(preset("zoom_in").K[-1, 0, 0] / preset("zoom_in").K[0, 0, 0]) == pytest.approx(1.5)


def test_dolly_zoom_keeps_the_pivot_image_size(tmp_path):
    t = from_yaml(tmp_path, """
        frames: 9
        segments: [{kind: dolly_zoom, distance: -0.5, pivot_depth: 2.0}]
    """, scene_depth=3.0)
    a = pix(t, (0.0, 0.0, 6.0))
    b = pix(t, (0.5, 0.3, 6.0))  # another point at the pivot depth
    size = (b - a).norm(dim=-1)
    assert torch.allclose(size, size[0].expand(9), rtol=1e-9)
    assert float(centres(t)[-1, 2]) == pytest.approx(-1.5)
    assert float(t.K[-1, 0, 0] / t.K[0, 0, 0]) == pytest.approx(7.5 / 6.0)  # (p - d) / p
    # a point behind the pivot does change size (that is the effect)
    far = (pix(t, (0.5, 0.0, 12.0)) - pix(t, (0.0, 0.0, 12.0))).norm(dim=-1)
    assert float(far[-1] / far[0]) > 1.05


def test_tilt_pedestal_roll_directions(tmp_path):
    t = from_yaml(tmp_path, "frames: 3\nsegments: [{kind: tilt, angle: 10}]")
    assert float(pix(t, (0.0, 0.0, 4.0))[-1, 1]) > float(t.K[0, 1, 2])  # looking up: content moves down
    t = from_yaml(tmp_path, "frames: 3\nsegments: [{kind: pedestal, distance: 0.2}]")
    assert torch.allclose(centres(t)[-1], torch.tensor([0.0, -0.2, 0.0], dtype=DT))
    t = from_yaml(tmp_path, "frames: 3\nsegments: [{kind: roll, angle: 90}]")
    # the camera turns clockwise in the image: its x axis now points down (+y) in frame 0's frame
    assert torch.allclose(t.c2w[-1, :3, 0], torch.tensor([0.0, 1.0, 0.0], dtype=DT), atol=1e-12)


def test_spiral_keeps_the_pivot_centred_and_ends_on_its_circle():
    t = preset("spiral", scene_depth=2.0)
    assert torch.allclose(pix(t, (0.0, 0.0, 2.0)), t.K[:, :2, 2], atol=1e-9)
    C = centres(t)
    assert float(C[-1, :2].norm()) == pytest.approx(0.2)  # radius 0.1 x 2
    assert float(C[-1, 2]) == pytest.approx(0.4)
    assert float(C[24, 0]) < 0  # half a turn: the other side of the axis


def test_keyframes_slerp_endpoints_and_constant_angular_speed(tmp_path):
    t = from_yaml(tmp_path, """
        frames: 21
        easing: linear
        segments:
          - kind: keyframes
            keys:
              - {position: [0.2, 0.0, 0.4], yaw: 40, pitch: 10, zoom: 2}
    """)
    R = t.c2w[:, :3, :3]
    assert float(rotation_angle_deg(R[0])) == pytest.approx(0.0, abs=1e-9)
    # end rotation: yaw 40 (turn right) then pitch 10 (look up)
    z_end = R[-1, :, 2]
    assert float(z_end[0]) == pytest.approx(math.sin(math.radians(40)) * math.cos(math.radians(10)))
    assert float(z_end[1]) == pytest.approx(-math.sin(math.radians(10)))
    steps = rotation_angle_deg(R[:-1].transpose(-1, -2) @ R[1:])  # (20,) angle between consecutive frames
    assert torch.allclose(steps, steps.mean().expand(20), atol=1e-6)
    assert torch.allclose(centres(t)[-1], torch.tensor([0.2, 0.0, 0.4], dtype=DT))
    assert float(t.K[-1, 0, 0] / t.K[0, 0, 0]) == pytest.approx(2.0)


def test_keyframes_look_at_and_smooth_position(tmp_path):
    t = from_yaml(tmp_path, """
        frames: 31
        easing: linear
        segments:
          - kind: keyframes
            keys:
              - {position: [-0.2, 0.0, 0.2], look_at: [0.0, 0.0, 1.0]}
              - {position: [-0.2, 0.0, 0.6], look_at: [0.3, 0.0, 1.5]}
    """, scene_depth=2.0)
    # at the waypoints the camera is there and looks at the target
    assert torch.allclose(centres(t)[15], torch.tensor([-0.4, 0.0, 0.4], dtype=DT), atol=1e-12)
    assert torch.allclose(pix(t, (0.0, 0.0, 2.0))[15], t.K[15, :2, 2], atol=1e-9)
    assert torch.allclose(pix(t, (0.6, 0.0, 3.0))[-1], t.K[-1, :2, 2], atol=1e-9)
    # Catmull-Rom passes the waypoint without a kink: the step direction turns by a few degrees, where a
    # polyline through the waypoints would turn by 45
    C = centres(t)
    d_in, d_out = C[15] - C[14], C[16] - C[15]
    turn = math.degrees(math.acos(float(d_in @ d_out / (d_in.norm() * d_out.norm()))))
    assert turn < 10.0


def test_chained_segments_start_where_the_last_ended(tmp_path):
    t = from_yaml(tmp_path, """
        frames: 21
        easing: linear
        segments:
          - {kind: pan, angle: -30}
          - {kind: truck, distance: -0.2}
    """)
    # frame 10 is the end of the pan: turned 30 degrees left, not moved
    R_pan = t.c2w[10, :3, :3]
    assert float(rotation_angle_deg(R_pan)) == pytest.approx(30.0)
    assert float(R_pan[0, 2]) == pytest.approx(-0.5)  # optical axis points left (-x)
    assert torch.allclose(centres(t)[:11], torch.zeros(11, 3, dtype=DT), atol=1e-12)
    # the truck then moves along the panned camera's x axis, keeping the panned rotation
    assert torch.allclose(centres(t)[-1], -0.2 * R_pan[:, 0], atol=1e-12)
    assert torch.allclose(t.c2w[10:, :3, :3], R_pan.expand(11, 3, 3), atol=1e-12)
    # no jumps anywhere along the shipped chained tour
    tour = preset("tour")
    steps = (centres(tour)[1:] - centres(tour)[:-1]).norm(dim=-1)
    assert float(steps.max()) < 0.05


def test_shares_split_the_frames(tmp_path):
    t = from_yaml(tmp_path, """
        frames: 31
        easing: linear
        segments:
          - {kind: truck, distance: 0.1, share: 2}
          - {kind: dolly, distance: 0.1}
    """)
    assert torch.allclose(centres(t)[20], torch.tensor([0.1, 0.0, 0.0], dtype=DT), atol=1e-12)
    assert float(centres(t)[19, 2]) == 0.0 and float(centres(t)[21, 2]) > 0.0


def test_smooth_easing_starts_and_stops_gently():
    t = preset("dolly_in")  # smooth easing by default
    steps = (centres(t)[1:] - centres(t)[:-1]).norm(dim=-1)
    assert float(steps[0]) < 0.1 * float(steps[24])
    assert float(steps[-1]) < 0.1 * float(steps[24])


def test_scene_depth_scales_translations_only():
    a, b = preset("tour", scene_depth=1.0), preset("tour", scene_depth=3.0)
    assert torch.allclose(centres(b), 3.0 * centres(a), atol=1e-12)
    assert torch.allclose(a.c2w[:, :3, :3], b.c2w[:, :3, :3])
    assert torch.equal(a.K, b.K)


def test_intrinsics_frames_fps_overrides(tmp_path):
    K = torch.tensor([[50.0, 0.0, 30.0], [0.0, 52.0, 20.0], [0.0, 0.0, 1.0]], dtype=DT)
    t = preset("orbit", K=K, frames=9, fps=8.0)
    assert t.num_frames == 9 and t.fps == 8.0
    assert torch.equal(t.K[0], K) and torch.equal(t.K[-1], K)
    t = from_yaml(tmp_path, "fov: 90\nsegments: [{kind: pan}]")
    assert float(t.K[0, 0, 0]) == pytest.approx(W / 2)  # f = (W / 2) / tan(45)
    with pytest.raises(TrajectoryError, match="--frames"):
        preset("orbit", frames=1)
    with pytest.raises(TrajectoryError, match="scene_depth"):
        preset("orbit", scene_depth=float("nan"))


# ---------------------------------------------------------------------------------------------------------------
# validation


def _err(tmp_path: Path, text: str) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(TrajectoryError) as e:
        load_camera_preset(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    return msg


def test_unknown_key_names_key_and_line(tmp_path):
    msg = _err(tmp_path, """
        frames: 9
        segments:
          - kind: orbit
            yaw: 10
            pivot_dept: 1.0
    """)
    assert ":5:" in msg and "pivot_dept" in msg and "pivot_depth" in msg  # allowed keys listed
    msg = _err(tmp_path, "frame: 9\nsegments: [{kind: pan}]\n")
    assert ":1:" in msg and "'frame'" in msg and "frames" in msg


def test_bad_values_are_one_line_errors(tmp_path):
    assert ":2:" in (m := _err(tmp_path, "frames: 9\nfps: abc\nsegments: [{kind: pan}]\n")) and "number" in m
    assert "frames" in (m := _err(tmp_path, "frames: 1\nsegments: [{kind: pan}]\n")) and "range" in m
    assert "fov" in (m := _err(tmp_path, "fov: 0\nsegments: [{kind: pan}]\n")) and "(1.0, 179.0)" in m
    assert "finite" in _err(tmp_path, "segments:\n  - {kind: orbit, yaw: .nan}\n")
    assert "integer" in _err(tmp_path, "frames: 9.5\nsegments: [{kind: pan}]\n")
    assert "easing" in _err(tmp_path, "easing: bouncy\nsegments: [{kind: pan}]\n")
    m = _err(tmp_path, "segments:\n  - kind: wobble\n")
    assert ":2:" in m and "wobble" in m and "orbit" in m and "keyframes" in m
    assert "segments" in _err(tmp_path, "frames: 9\n")
    assert "segments" in _err(tmp_path, "segments: []\n")
    assert "pivot" in _err(tmp_path, "segments: [{kind: dolly_zoom, distance: 1.0}]\n")
    assert "look_at" in _err(tmp_path, "segments:\n - kind: keyframes\n   keys: [{position: [0, 0, 0], look_at: [0, 0, 1], yaw: 3}]\n")
    assert "straight above" in _err(tmp_path, "segments:\n - kind: keyframes\n   keys: [{look_at: [0, 1, 0]}]\n")
    assert "3 numbers" in _err(tmp_path, "segments:\n - kind: keyframes\n   keys: [{position: [0, 1]}]\n")
    assert "duplicate" in _err(tmp_path, "frames: 9\nframes: 10\nsegments: [{kind: pan}]\n")


def test_malformed_yaml_names_file_and_line(tmp_path):
    msg = _err(tmp_path, "frames: 9\nsegments:\n  - {kind: pan\n  - x: [\n")
    assert "invalid YAML" in msg and f"{tmp_path / 'bad.yaml'}:" in msg


def test_unknown_preset_name_lists_valid_names(tmp_path, monkeypatch):
    with pytest.raises(TrajectoryError, match="valid names: .*orbit_left"):
        find_camera_preset("orbitt")
    with pytest.raises(TrajectoryError, match="no preset of that name; presets: .*truck_left"):
        load_trajectory("orbitt", width=W, height=H)
    monkeypatch.setenv("MIRAGE_PRESETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(TrajectoryError, match="MIRAGE_PRESETS_DIR"):
        list_camera_presets()
    (tmp_path / "mine.yaml").write_text("description: mine\nsegments: [{kind: pan}]\n")
    monkeypatch.setenv("MIRAGE_PRESETS_DIR", str(tmp_path))
    assert [p.name for p in list_camera_presets()] == ["mine"]


# ---------------------------------------------------------------------------------------------------------------
# dispatcher


def test_dispatcher_presets_by_name_and_by_path(tmp_path):
    a = load_trajectory("orbit", width=W, height=H, scene_depth=2.0)
    b = preset("orbit", scene_depth=2.0)
    assert torch.equal(a.w2c, b.w2c) and torch.equal(a.K, b.K)
    c = load_trajectory(find_camera_preset("orbit"), width=W, height=H, scene_depth=2.0, scale=0.5)
    assert torch.allclose(centres(c), 0.5 * centres(b))
    with pytest.raises(TrajectoryError, match="needs the image size"):
        load_trajectory("orbit")
    with pytest.raises(TrajectoryError, match="--start"):
        load_trajectory("orbit", width=W, height=H, start="x")


def test_dispatcher_camera_file_is_rebased_resized_resampled(tmp_path):
    torch.manual_seed(0)
    from mirage.camera import axis_angle_to_rotmat

    R = axis_angle_to_rotmat(torch.randn(5, 3, dtype=DT), torch.rand(5, dtype=DT))
    w2c = make_rigid(R, torch.randn(5, 3, dtype=DT))
    K = intrinsics_from_fov(50.0, 128, 96).expand(5, 3, 3).clone()
    src = Trajectory(K=K, w2c=w2c, width=128, height=96, fps=10.0, source="test")
    path = tmp_path / "cams.json"
    src.save_json(path)
    t = load_trajectory(path, width=W, height=H, scale=2.0)
    assert torch.allclose(t.w2c[0], torch.eye(4, dtype=DT), atol=1e-12)
    # relative poses kept (translations doubled): w2c_i @ c2w_j
    rel_src = src.scaled(2.0).w2c[3] @ invert_rigid(src.scaled(2.0).w2c[1])
    assert torch.allclose(t.w2c[3] @ invert_rigid(t.w2c[1]), rel_src, atol=1e-9)
    assert t.size == (W, H) and float(t.K[0, 0, 0]) == pytest.approx(float(K[0, 0, 0]) / 2)
    assert t.fps == 10.0
    t = load_trajectory(path, frames=9, fps=24.0)
    assert t.num_frames == 9 and t.fps == 24.0 and t.size == (128, 96)
    with pytest.raises(TrajectoryError, match="aspect"):
        load_trajectory(path, width=64, height=64)


# ---------------------------------------------------------------------------------------------------------------
# open_trajectory: a camera file comes back read, a preset waits for the scene depth


def test_open_preset_waits_for_the_scene_depth():
    src = open_trajectory("orbit", frames=9, fps=8.0, scale=0.5, width=W, height=H)
    assert isinstance(src, CameraPresetSource) and not isinstance(src, CameraFileSource)
    assert src.preset == load_camera_preset(find_camera_preset("orbit"))
    assert (src.frames, src.fps, src.scale) == (9, 8.0, 0.5)
    near, far = src.resolve(W, H, scene_depth=1.0), src.resolve(W, H, scene_depth=3.0)
    assert near.num_frames == 9 and near.fps == 8.0 and near.size == (W, H)
    assert centres(far).abs().max() > 0.1  # the orbit moves the camera
    assert torch.allclose(centres(far), 3.0 * centres(near), atol=1e-12)  # distances follow the scene depth
    assert torch.allclose(centres(near), 0.5 * centres(preset("orbit", frames=9)), atol=1e-12)  # and --traj-scale
    K = intrinsics_from_fov(30.0, W, H)
    assert torch.equal(src.resolve(W, H, K=K).K[0], K)
    # load_trajectory is open + resolve: the same cameras
    same = load_trajectory("orbit", width=W, height=H, scene_depth=3.0, frames=9, fps=8.0, scale=0.5)
    assert torch.equal(same.w2c, far.w2c) and torch.equal(same.K, far.K)


def test_open_camera_file_is_already_a_trajectory(tmp_path):
    w2c = make_rigid(torch.eye(3, dtype=DT).expand(3, 3, 3), torch.tensor([[1.0, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=DT))
    K = intrinsics_from_fov(50.0, 128, 96).expand(3, 3, 3).clone()
    path = tmp_path / "cams.json"
    Trajectory(K=K, w2c=w2c, width=128, height=96, fps=10.0).save_json(path)
    src = open_trajectory(path, width=W, height=H, scale=2.0)
    assert isinstance(src, CameraFileSource) and not isinstance(src, CameraPresetSource)
    t = src.trajectory
    assert isinstance(t, Trajectory) and t.size == (W, H) and t.num_frames == 3
    assert torch.allclose(t.w2c[0], torch.eye(4, dtype=DT), atol=1e-12)  # rebased
    assert torch.allclose(centres(t)[:, 0], torch.tensor([0.0, -2.0, -4.0], dtype=DT), atol=1e-12)  # scaled
    assert torch.equal(load_trajectory(path, width=W, height=H, scale=2.0).w2c, t.w2c)
    with pytest.raises(TrajectoryError, match="--start 'x': applies to camera files"):
        open_trajectory("orbit", start="x")
    with pytest.raises(TrajectoryError, match="--format: 'nope' is not a choice"):
        open_trajectory(path, fmt="nope")
