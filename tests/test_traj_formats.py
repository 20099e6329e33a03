"""Camera-file readers on real files (RealEstate10K, COLMAP) and hand-made ones with known cameras."""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path

import pytest
import torch

from mirage.camera import is_rotation, opencv_to_opengl_c2w, project_world_to_pixels
from mirage.errors import TrajectoryError
from mirage.trajectory.formats import TrajFormat, detect_format, read_camera_file
from mirage.trajectory.types import Trajectory

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RE10K_DIR = SHARED / "cameras" / "realestate10k"
COLMAP_DIR = SHARED / "colmap" / "statue-of-liberty" / "sparse" / "0"


def _need(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"shared test data {p} is absent")
    return p


# ----------------------------------------------------------------------------------------------------------------
# RealEstate10K


def test_re10k_all_files_load():
    files = sorted(_need(RE10K_DIR).glob("*.txt"))
    assert len(files) == 30
    for f in files:
        assert detect_format(f) is TrajFormat.REALESTATE10K
        t = read_camera_file(f, width=640, height=360)
        assert t.num_frames in (14, 16, 25), f.name
        assert (t.width, t.height) == (640, 360)
        assert 1.0 < t.fps < 61.0, (f.name, t.fps)  # the clips are subsampled videos: a few fps to 30
        assert bool(is_rotation(t.w2c[:, :3, :3], atol=1e-4).all()), f.name
        assert t.K.dtype == torch.float64 and t.w2c.dtype == torch.float64
        assert t.source == str(f)
        # timestamps are the names and increase
        ts = [int(n) for n in t.names]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)


def test_re10k_known_line_round_trips():
    f = _need(RE10K_DIR) / "0bf152ef84195293.txt"
    lines = f.read_text().splitlines()
    assert lines[0].startswith("https://")
    vals = [float(x) for x in lines[2].split()]  # frame 1
    W, H = 1024, 576
    t = read_camera_file(f, width=W, height=H)
    # normalised, edge-based intrinsics -> pixel-centre pixels
    assert t.K[1, 0, 0].item() == pytest.approx(vals[1] * W, abs=1e-9)
    assert t.K[1, 1, 1].item() == pytest.approx(vals[2] * H, abs=1e-9)
    assert t.K[1, 0, 2].item() == pytest.approx(vals[3] * W - 0.5, abs=1e-9)
    assert t.K[1, 1, 2].item() == pytest.approx(vals[4] * H - 0.5, abs=1e-9)
    expected = torch.tensor(vals[7:], dtype=torch.float64).reshape(3, 4)
    assert torch.equal(t.w2c[1, :3, :], expected)
    assert torch.equal(t.w2c[1, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert t.names[1] == lines[2].split()[0]
    # fps from the microsecond timestamps (constant step 266934 us in this file's first rows)
    steps = [int(b.split()[0]) - int(a.split()[0]) for a, b in zip(lines[1:-1], lines[2:], strict=True)]
    steps.sort()
    assert t.fps == pytest.approx(1e6 / steps[len(steps) // 2], rel=1e-9)
    assert t.fps == pytest.approx(3.746, abs=1e-3)


def test_re10k_needs_size_and_fps_override():
    f = _need(RE10K_DIR) / "0bf152ef84195293.txt"
    with pytest.raises(TrajectoryError, match=r"--size WxH or --image"):
        read_camera_file(f)
    assert read_camera_file(f, width=64, height=36, fps=12.0).fps == 12.0


def test_re10k_start_by_timestamp():
    f = _need(RE10K_DIR) / "0bf152ef84195293.txt"
    full = read_camera_file(f, width=64, height=36)
    t = read_camera_file(f, width=64, height=36, start=full.names[3])
    assert t.num_frames == full.num_frames - 3
    assert torch.equal(t.w2c, full.w2c[3:])


# ----------------------------------------------------------------------------------------------------------------
# COLMAP


def _colmap_text_rows():
    """(image_id, qvec, tvec, camera_id, name, xys (P, 2), point3D_ids (P,)) parsed the straightforward way."""
    lines = (COLMAP_DIR / "images.txt").read_text().splitlines()
    data = [ln for ln in lines if not ln.startswith("#")]
    rows = []
    for pose, pts in zip(data[0::2], data[1::2], strict=True):
        e = pose.split()
        p = pts.split()
        xys = [(float(p[i]), float(p[i + 1])) for i in range(0, len(p), 3)]
        ids = [int(p[i + 2]) for i in range(0, len(p), 3)]
        rows.append(
            (int(e[0]), tuple(map(float, e[1:5])), tuple(map(float, e[5:8])), int(e[8]), e[9], xys, ids)
        )
    return rows


def test_colmap_text_loads():
    _need(COLMAP_DIR)
    t = read_camera_file(COLMAP_DIR)
    assert detect_format(COLMAP_DIR) is TrajFormat.COLMAP
    assert detect_format(COLMAP_DIR.parent.parent) is TrajFormat.COLMAP  # project folder with sparse/0
    assert t.num_frames == 40 and (t.width, t.height) == (800, 1200)
    assert t.fps == 30.0
    # cameras.txt: 1 SIMPLE_RADIAL 800 1200 2395.65 400 600 -0.684122 (edge-based principal point)
    K = torch.tensor([[2395.65, 0, 399.5], [0, 2395.65, 599.5], [0, 0, 1]], dtype=torch.float64)
    assert torch.equal(t.K, K.expand(40, 3, 3))
    assert list(t.names) == sorted(t.names)
    rows = _colmap_text_rows()
    first = min(rows, key=lambda r: r[4])
    assert t.names[0] == first[4]
    assert torch.allclose(t.w2c[0, :3, 3], torch.tensor(first[2], dtype=torch.float64), atol=0, rtol=0)
    # parent folder gives the same cameras
    t2 = read_camera_file(COLMAP_DIR.parent.parent)
    assert torch.equal(t2.w2c, t.w2c)


def test_colmap_order_and_start():
    _need(COLMAP_DIR)
    rows = _colmap_text_rows()
    by_id = read_camera_file(COLMAP_DIR, colmap_order="id")
    assert list(by_id.names) == [r[4] for r in sorted(rows, key=lambda r: r[0])]
    by_name = read_camera_file(COLMAP_DIR)
    start = by_name.names[7]
    t = read_camera_file(COLMAP_DIR, start=start)
    assert t.names[0] == start and t.num_frames == 33
    assert torch.equal(t.w2c, by_name.w2c[7:])
    with pytest.raises(TrajectoryError, match="--colmap-order"):
        read_camera_file(COLMAP_DIR, colmap_order="time")


def test_colmap_distortion_warning_once(caplog):
    _need(COLMAP_DIR)
    with caplog.at_level(logging.WARNING, logger="mirage"):
        read_camera_file(COLMAP_DIR)
    msgs = [r.getMessage() for r in caplog.records if "distortion" in r.getMessage()]
    assert len(msgs) == 1 and "SIMPLE_RADIAL" in msgs[0]


_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4}


def write_colmap_binary(folder: Path, cameras_txt: Path, rows) -> None:
    """Write cameras.bin / images.bin as COLMAP's read_write_model.py does (little-endian)."""
    folder.mkdir(parents=True, exist_ok=True)
    cams = [
        ln.split() for ln in cameras_txt.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    buf = struct.pack("<Q", len(cams))
    for c in cams:
        params = [float(x) for x in c[4:]]
        buf += struct.pack("<iiQQ", int(c[0]), _MODEL_IDS[c[1]], int(c[2]), int(c[3]))
        buf += struct.pack("<" + "d" * len(params), *params)
    (folder / "cameras.bin").write_bytes(buf)
    buf = struct.pack("<Q", len(rows))
    for iid, q, t, cid, name, xys, ids in rows:
        buf += struct.pack("<idddddddi", iid, *q, *t, cid)
        buf += name.encode() + b"\x00"
        buf += struct.pack("<Q", len(xys))
        for (x, y), pid in zip(xys, ids, strict=True):
            buf += struct.pack("<ddq", x, y, pid)
    (folder / "images.bin").write_bytes(buf)


def test_colmap_binary_matches_text(tmp_path):
    _need(COLMAP_DIR)
    rows = _colmap_text_rows()
    write_colmap_binary(tmp_path / "proj" / "sparse" / "0", COLMAP_DIR / "cameras.txt", rows)
    for order in ("name", "id"):
        txt = read_camera_file(COLMAP_DIR, colmap_order=order)
        binary = read_camera_file(tmp_path / "proj", colmap_order=order)  # parent of sparse/0
        assert torch.equal(binary.K, txt.K)
        assert torch.equal(binary.w2c, txt.w2c)
        assert binary.names == txt.names
        assert (binary.width, binary.height) == (800, 1200)
    assert detect_format(tmp_path / "proj" / "sparse" / "0" / "images.bin") is TrajFormat.COLMAP


def test_colmap_reprojection_error_matches_colmap():
    """Project every 3D point into the images that observe it and compare with the stored 2D observations.

    COLMAP's 2D observations (like its principal point) put the centre of the top-left pixel at (0.5, 0.5);
    mirage puts it at (0, 0), so 0.5 is subtracted from the observations. SIMPLE_RADIAL distortion
    (``x_d = x (1 + k1 r^2)`` on normalised coordinates) is applied here; the reader itself ignores it.
    COLMAP reported a mean reprojection error of 1.15 px for this model.
    """
    _need(COLMAP_DIR)
    rows = _colmap_text_rows()
    t = read_camera_file(COLMAP_DIR, colmap_order="id")
    frame_of = {r[0]: i for i, r in enumerate(sorted(rows, key=lambda r: r[0]))}
    obs_of = {r[0]: r[5] for r in rows}
    k1 = float((COLMAP_DIR / "cameras.txt").read_text().splitlines()[-1].split()[-1])
    assert k1 == pytest.approx(-0.684122)
    xyz, frame, uv_obs = [], [], []
    for ln in (COLMAP_DIR / "points3D.txt").read_text().splitlines():
        if ln.startswith("#") or not ln.strip():
            continue
        e = ln.split()
        track = [int(v) for v in e[8:]]
        for iid, idx in zip(track[0::2], track[1::2], strict=True):
            xyz.append([float(e[1]), float(e[2]), float(e[3])])
            frame.append(frame_of[iid])
            uv_obs.append(obs_of[iid][idx])
    assert len(xyz) > 7000
    xyz_world = torch.tensor(xyz, dtype=torch.float64)  # (M, 3)
    fi = torch.tensor(frame)
    w2c = t.w2c[fi]  # (M, 4, 4)
    xyz_cam = (w2c[:, :3, :3] @ xyz_world[:, :, None])[..., 0] + w2c[:, :3, 3]  # (M, 3)
    assert bool((xyz_cam[:, 2] > 0).all())
    xn = xyz_cam[:, :2] / xyz_cam[:, 2:]  # (M, 2) normalised
    r2 = (xn**2).sum(-1, keepdim=True)
    xd = xn * (1 + k1 * r2)
    K = t.K[fi]
    uv = torch.stack([K[:, 0, 0] * xd[:, 0] + K[:, 0, 2], K[:, 1, 1] * xd[:, 1] + K[:, 1, 2]], dim=-1)
    uv_mirage = torch.tensor(uv_obs, dtype=torch.float64) - 0.5
    err = (uv - uv_mirage).norm(dim=-1)
    mean = float(err.mean())
    assert 0.5 < mean < 1.5, mean
    # without the -0.5 shift on one side the error would grow; the convention is not a no-op
    err_wrong = (uv - (uv_mirage + 0.5)).norm(dim=-1)
    assert float(err_wrong.mean()) > mean


# ----------------------------------------------------------------------------------------------------------------
# nerfstudio / NeRF


def _gl_cam_at(x: float, y: float, z: float) -> list[list[float]]:
    """OpenGL camera-to-world at (x, y, z) looking down world -z (towards the origin for (0, 0, 5))."""
    return [[1.0, 0, 0, x], [0, 1.0, 0, y], [0, 0, 1.0, z], [0, 0, 0, 1.0]]


def test_nerfstudio_camera_looking_at_origin(tmp_path):
    W, H = 640, 480
    d = {
        "camera_model": "OPENCV",
        "fl_x": 500.0,
        "fl_y": 510.0,
        "cx": 320.0,
        "cy": 240.0,
        "w": W,
        "h": H,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": [
            {"file_path": "images/a.png", "transform_matrix": _gl_cam_at(0, 0, 5)},
            {"file_path": "images/b.png", "transform_matrix": _gl_cam_at(1, 0, 5)},
            {"file_path": "images/c.png", "transform_matrix": _gl_cam_at(0, 1, 5)[:3]},  # 3x4 accepted
        ],
    }
    f = tmp_path / "transforms.json"
    f.write_text(json.dumps(d))
    assert detect_format(f) is TrajFormat.NERFSTUDIO
    t = read_camera_file(f, width=99, height=99)  # the file's size wins
    assert (t.width, t.height) == (W, H) and t.fps == 30.0
    assert t.names == ("images/a.png", "images/b.png", "images/c.png")
    # edge-based cx = W/2 -> pixel-centre (W-1)/2
    assert t.K[0].tolist() == [[500.0, 0.0, 319.5], [0.0, 510.0, 239.5], [0.0, 0.0, 1.0]]
    origin = torch.zeros(1, 3, dtype=torch.float64)
    uv, z = project_world_to_pixels(origin, t.K, t.w2c)  # (3, 1, 2), (3, 1)
    assert torch.allclose(z[:, 0], torch.full((3,), 5.0, dtype=torch.float64))
    assert torch.allclose(uv[0, 0], torch.tensor([319.5, 239.5], dtype=torch.float64))
    # camera moved right by 1: the origin appears left by f * 1 / 5 pixels
    assert torch.allclose(uv[1, 0], torch.tensor([319.5 - 100.0, 239.5], dtype=torch.float64))
    # camera moved up by 1 (OpenGL world y up): the origin appears lower in the image (OpenCV v grows down)
    assert torch.allclose(uv[2, 0], torch.tensor([319.5, 239.5 + 102.0], dtype=torch.float64))
    # and back: OpenCV c2w -> OpenGL gives the file's matrix
    assert torch.allclose(
        opencv_to_opengl_c2w(t.c2w[0]), torch.tensor(_gl_cam_at(0, 0, 5), dtype=torch.float64)
    )


def test_nerf_synthetic_camera_angle_x(tmp_path):
    ax = 0.6911112070083618  # NeRF-synthetic lego
    d = {"camera_angle_x": ax, "frames": [{"file_path": "./r_0", "transform_matrix": _gl_cam_at(0, 0, 4)}]}
    f = tmp_path / "transforms_train.json"
    f.write_text(json.dumps(d))
    with pytest.raises(TrajectoryError, match="--size WxH"):
        read_camera_file(f)
    t = read_camera_file(f, width=800, height=800)
    fx = 0.5 * 800 / math.tan(0.5 * ax)
    assert t.K[0, 0, 0].item() == pytest.approx(fx) and t.K[0, 1, 1].item() == pytest.approx(fx)
    assert t.K[0, 0, 2].item() == 399.5 and t.K[0, 1, 2].item() == 399.5


def test_nerfstudio_per_frame_intrinsics_and_distortion_warning(tmp_path, caplog):
    d = {
        "w": 100,
        "h": 50,
        "k1": 0.1,
        "frames": [
            {"fl_x": 80.0, "cx": 50.0, "cy": 25.0, "transform_matrix": _gl_cam_at(0, 0, 1)},
            {"fl_x": 90.0, "fl_y": 91.0, "cx": 51.0, "cy": 26.0, "transform_matrix": _gl_cam_at(0, 0, 2)},
        ],
    }
    f = tmp_path / "transforms.json"
    f.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING, logger="mirage"):
        t = read_camera_file(f)
    assert sum("distortion" in r.getMessage() for r in caplog.records) == 1
    assert t.K[:, 0, 0].tolist() == [80.0, 90.0] and t.K[:, 1, 1].tolist() == [80.0, 91.0]
    assert t.K[:, 0, 2].tolist() == [49.5, 50.5] and t.K[:, 1, 2].tolist() == [24.5, 25.5]
    assert t.names is None


# ----------------------------------------------------------------------------------------------------------------
# WorldScore


def _worldscore_c2w(R_pt3d: torch.Tensor, T_pt3d: torch.Tensor) -> list[list[float]]:
    """What WorldScore's CameraGen.save_cameras writes: inverse(diag(-1, 1, -1, 1) @ [R | T])."""
    RT = torch.eye(4, dtype=torch.float64)
    RT[:3, :3] = R_pt3d
    RT[:3, 3] = T_pt3d
    w2c_blender = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)) @ RT
    return torch.inverse(w2c_blender).tolist()


def test_worldscore_camera_data(tmp_path):
    eye = torch.eye(3, dtype=torch.float64)
    interp = [
        _worldscore_c2w(eye, torch.tensor([0.0, 0.0, 5.0 - 0.5 * i], dtype=torch.float64)) for i in range(5)
    ]
    d = {"focal_length": 500, "scale": 1, "cameras": [interp[0], interp[-1]], "cameras_interp": interp}
    f = tmp_path / "camera_data.json"
    f.write_text(json.dumps(d, indent=4))
    assert detect_format(f) is TrajFormat.WORLDSCORE
    with pytest.raises(TrajectoryError, match="--size WxH"):
        read_camera_file(f)
    t = read_camera_file(f, width=640, height=480)
    assert t.num_frames == 5  # cameras_interp, not the 2 keyframes
    assert t.K[0].tolist() == [[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]]
    origin = torch.zeros(1, 3, dtype=torch.float64)
    uv, z = project_world_to_pixels(origin, t.K, t.w2c)
    # the origin stays in front of every camera, at the principal point, getting nearer (a push-in)
    assert torch.allclose(z[:, 0], torch.tensor([5.0, 4.5, 4.0, 3.5, 3.0], dtype=torch.float64))
    assert torch.allclose(uv[:, 0], torch.tensor([319.5, 239.5], dtype=torch.float64).expand(5, 2))
    # keyframes only
    del d["cameras_interp"]
    f.write_text(json.dumps(d))
    assert read_camera_file(f, TrajFormat.WORLDSCORE, width=64, height=48).num_frames == 2


def test_worldscore_pan_is_a_rotation_about_camera_y(tmp_path):
    """WorldScore's pan_right multiplies R by a rotation about y; the result must turn the camera right."""
    th = math.radians(-30)
    Ry = torch.tensor(
        [[math.cos(th), 0, -math.sin(th)], [0, 1, 0], [math.sin(th), 0, math.cos(th)]], dtype=torch.float64
    )
    zero = torch.zeros(3, dtype=torch.float64)
    d = {
        "focal_length": 100,
        "cameras_interp": [
            _worldscore_c2w(torch.eye(3, dtype=torch.float64), zero),
            _worldscore_c2w(Ry, zero),
        ],
    }
    f = tmp_path / "camera_data.json"
    f.write_text(json.dumps(d))
    t = read_camera_file(f, width=200, height=100)
    ahead = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)  # a point ahead of frame 0 (OpenCV +z)
    uv, z = project_world_to_pixels(ahead, t.K, t.w2c)
    assert uv[0, 0, 0].item() == pytest.approx(99.5)
    # turning right moves a fixed point to the left of the image by f * tan(30 deg)
    assert z[1, 0].item() > 0
    assert uv[1, 0, 0].item() == pytest.approx(99.5 - 100 * math.tan(math.radians(30)), abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# mirage JSON, detection


def test_mirage_json_round_trip(tmp_path):
    _need(COLMAP_DIR)
    src = read_camera_file(COLMAP_DIR)
    f = tmp_path / "traj.json"
    src.save_json(f)
    assert detect_format(f) is TrajFormat.MIRAGE
    back = read_camera_file(f)
    assert torch.equal(back.K, src.K) and torch.equal(back.w2c, src.w2c)
    assert (back.width, back.height, back.fps) == (src.width, src.height, src.fps)
    assert back.names == src.names and back.source == str(f)
    # unnamed, resized, other fps
    t = Trajectory(K=src.K[:3].clone(), w2c=src.w2c[:3].clone(), width=800, height=1200, fps=7.5).resized(
        400, 600
    )
    t.save_json(f)
    back = read_camera_file(f)
    assert (
        torch.equal(back.K, t.K) and torch.equal(back.w2c, t.w2c) and back.fps == 7.5 and back.names is None
    )
    assert read_camera_file(f, fps=24.0).fps == 24.0


def test_detect_format_and_choices(tmp_path):
    y = tmp_path / "orbit.yaml"
    y.write_text("kind: orbit\n")
    assert detect_format(y) is TrajFormat.PRESET
    with pytest.raises(TrajectoryError, match="preset"):
        read_camera_file(y)
    c = tmp_path / "cams.csv"
    c.write_text("1,2,3\n")
    with pytest.raises(
        TrajectoryError, match=r"--format \(preset, colmap, realestate10k, nerfstudio, worldscore, mirage\)"
    ):
        detect_format(c)
    r = tmp_path / "noheader.txt"  # RealEstate10K rows without the URL line
    r.write_text("0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n")
    assert detect_format(r) is TrajFormat.REALESTATE10K
    t = read_camera_file(r, width=100, height=50)
    assert t.K[0].tolist() == [[50.0, 0.0, 49.5], [0.0, 45.0, 24.5], [0.0, 0.0, 1.0]] and t.fps == 30.0
    with pytest.raises(TrajectoryError, match="--format"):
        read_camera_file(r, "bogus")  # type: ignore[arg-type]
    assert read_camera_file(r, "realestate10k", width=100, height=50).num_frames == 1  # type: ignore[arg-type]


def test_worldscore_file_with_its_own_size_keeps_its_field_of_view(tmp_path):
    """mirage's --worldscore writes width/height beside focal_length: reading at another size keeps the FoV."""
    import json as _json
    import math

    from mirage.camera import fov_x_from_intrinsics
    from mirage.trajectory import load_trajectory

    f = 0.5 * 832 / math.tan(math.radians(30.0))  # 60 degrees at 832 px
    eye = [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    p = tmp_path / "camera_data.json"
    p.write_text(_json.dumps({"focal_length": f, "scale": 1.0, "width": 832, "height": 480,
                              "cameras": [eye, eye], "cameras_interp": [eye, eye]}))
    t = load_trajectory(str(p), width=416, height=240)
    assert (t.width, t.height) == (416, 240)
    assert float(fov_x_from_intrinsics(t.K[0], 416)) == pytest.approx(60.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# nerfstudio camera_path.json (viewer export, ns-render camera-path)


def _ns_camera_path(cams: list, **top) -> dict:
    d = {"camera_type": "perspective", "render_width": 640, "render_height": 480, "fps": 24, "seconds": 1,
         "smoothness_value": 0.5, "is_cycle": False, "crop": None, "keyframes": [], "camera_path": cams}
    d.update(top)
    return d


def test_nerfstudio_camera_path(tmp_path):
    """Read as nerfstudio's get_path_from_json: row-major OpenGL camera_to_world, vertical fov in degrees with
    f = (H/2) / tan(fov/2) on both axes, principal point at the centre; fps from the file."""
    flat = lambda m: [x for row in m for x in row]  # noqa: E731
    cams = [{"camera_to_world": flat(_gl_cam_at(0, 0, 5)), "fov": 50.0, "aspect": 4 / 3},
            {"camera_to_world": flat(_gl_cam_at(1, 0, 5)), "fov": 40.0, "aspect": 4 / 3}]
    f = tmp_path / "camera_path.json"
    f.write_text(json.dumps(_ns_camera_path(cams)))
    assert detect_format(f) is TrajFormat.NERFSTUDIO
    t = read_camera_file(f)
    assert (t.num_frames, t.width, t.height, t.fps) == (2, 640, 480, 24.0)
    for i, fov in enumerate((50.0, 40.0)):
        foc = 240.0 / math.tan(math.radians(fov) / 2)
        want = torch.tensor([[foc, 0.0, 319.5], [0.0, foc, 239.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
        assert torch.allclose(t.K[i], want)
    origin = torch.zeros(1, 3, dtype=torch.float64)
    uv, z = project_world_to_pixels(origin, t.K, t.w2c)
    assert torch.allclose(z[:, 0], torch.full((2,), 5.0, dtype=torch.float64))
    assert torch.allclose(uv[0, 0], torch.tensor([319.5, 239.5], dtype=torch.float64))
    foc1 = 240.0 / math.tan(math.radians(40.0) / 2)
    assert torch.allclose(uv[1, 0], torch.tensor([319.5 - foc1 / 5, 239.5], dtype=torch.float64))  # moved right
    assert torch.allclose(opencv_to_opengl_c2w(t.c2w[1]), torch.tensor(_gl_cam_at(1, 0, 5), dtype=torch.float64))
    assert read_camera_file(f, fps=12).fps == 12.0  # --fps overrides the file's


@pytest.mark.parametrize("change, needle", [
    ({"camera_type": "equirectangular"}, "camera_type 'equirectangular' is not a pinhole camera"),
    ({"render_width": None}, "render_width is None, not a positive whole number of pixels"),
    ({"camera_path": []}, r"'camera_path' is \[\]; it needs one entry per frame"),
    ({"camera_path": [{"fov": 50}]}, r"camera_path\[0\] has no 'camera_to_world'"),
    ({"camera_path": [{"camera_to_world": [1, 0, 0, 0], "fov": 50}]}, r"must be 16 numbers \(a row-major 4x4\)"),
    ({"camera_path": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]}]}, "has no 'fov'"),
    ({"camera_path": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 190}]},
     r"fov = 190 is not in \(0, 180\) degrees"),
    ({"camera_path": [{"camera_to_world": [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50}]},
     "is not a rotation matrix"),
])
def test_nerfstudio_camera_path_errors(tmp_path, change, needle):
    d = _ns_camera_path([{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50}])
    d.update(change)
    f = tmp_path / "camera_path.json"
    f.write_text(json.dumps(d))
    with pytest.raises(TrajectoryError, match=needle) as e:
        read_camera_file(f, fmt=TrajFormat.NERFSTUDIO)
    assert "\n" not in str(e.value)
