"""Analytic checks of mirage/camera.py (conventions: docs/conventions.md)."""

from __future__ import annotations

import math

import pytest
import torch

from mirage import camera as cam
from mirage.errors import InputError

f64 = torch.float64


def _rand_pose(gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(4, generator=gen, dtype=f64)
    R = cam.quat_to_rotmat(q)
    t = torch.randn(3, generator=gen, dtype=f64)
    return cam.make_rigid(R, t)


def test_project_unproject_round_trip():
    gen = torch.Generator().manual_seed(1)
    K = cam.intrinsics_from_fov(70.0, 640, 360)
    uv = torch.rand(100, 2, generator=gen, dtype=f64) * torch.tensor([640.0, 360.0], dtype=f64)
    z = torch.rand(100, generator=gen, dtype=f64) * 10 + 0.5
    w2c = _rand_pose(gen)
    xyz_world = cam.transform_points(cam.invert_rigid(w2c), cam.unproject_to_cam(uv, z, K))
    uv2, z2 = cam.project_world_to_pixels(xyz_world, K, w2c)
    torch.testing.assert_close(uv2, uv)
    torch.testing.assert_close(z2, z)


def test_known_translation_moves_point_by_known_pixels():
    # a point at depth Z in front of the principal point; the camera moves right by b -> the point moves left by f*b/Z
    K = cam.intrinsics_from_fov(60.0, 832, 480)
    f = float(K[0, 0])
    Z, b = 4.0, 0.25
    xyz = torch.tensor([[0.0, 0.0, Z]], dtype=f64)
    c2w = cam.make_rigid(torch.eye(3, dtype=f64), torch.tensor([b, 0.0, 0.0], dtype=f64))
    uv, z = cam.project_world_to_pixels(xyz, K, cam.c2w_to_w2c(c2w))
    assert float(uv[0, 0]) == pytest.approx(float(K[0, 2]) - f * b / Z)
    assert float(uv[0, 1]) == pytest.approx(float(K[1, 2]))
    assert float(z[0]) == pytest.approx(Z)


def test_fov_and_pixel_centre_convention():
    K = cam.intrinsics_from_fov(90.0, 100, 50)
    assert float(K[0, 0]) == pytest.approx(50.0)
    assert float(K[0, 2]) == pytest.approx(49.5) and float(K[1, 2]) == pytest.approx(24.5)
    assert float(cam.fov_x_from_intrinsics(K, 100)) == pytest.approx(90.0)
    for bad in (0.5, 179.5, float("nan")):
        with pytest.raises(InputError, match="fov"):
            cam.intrinsics_from_fov(bad, 100, 50)


def test_latent_intrinsics_put_token_centres_on_footprint_centres():
    K = cam.intrinsics_from_fov(60.0, 832, 480)
    Kl = cam.intrinsics_to_latent(K, 8)
    # a world point that projects to pixel 8*j + 3.5 projects to latent cell j exactly
    for j in (0, 5, 103):
        u_pix = 8 * j + 3.5
        x = (u_pix - float(K[0, 2])) / float(K[0, 0])
        uv_l, _ = cam.project_cam_to_pixels(torch.tensor([[x, 0.0, 1.0]], dtype=f64), Kl)
        assert float(uv_l[0, 0]) == pytest.approx(j)
    # centred principal point stays centred on the latent grid
    assert float(Kl[0, 2]) == pytest.approx((104 - 1) / 2)
    assert float(Kl[1, 2]) == pytest.approx((60 - 1) / 2)


def test_opengl_to_opencv_hand_made_camera():
    # OpenGL camera at (0, 0, 5) in a y-up world, looking at the origin (down its -z): identity rotation.
    c2w_gl = cam.make_rigid(torch.eye(3, dtype=f64), torch.tensor([0.0, 0.0, 5.0], dtype=f64))
    c2w_cv = cam.opengl_to_opencv_c2w(c2w_gl)
    w2c = cam.c2w_to_w2c(c2w_cv)
    K = cam.intrinsics_from_fov(60.0, 64, 64)
    uv, z = cam.project_world_to_pixels(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=f64), K, w2c)
    assert float(z[0]) == pytest.approx(5.0)
    torch.testing.assert_close(uv[0], K[:2, 2])
    assert float(uv[1, 1]) < float(K[1, 2])  # world up (+y in OpenGL) appears above the centre (smaller v)
    torch.testing.assert_close(cam.opencv_to_opengl_c2w(c2w_cv), c2w_gl)


def test_pytorch3d_conversion_round_trip_and_axes():
    gen = torch.Generator().manual_seed(3)
    w2c = _rand_pose(gen)
    R, T = cam.opencv_to_pytorch3d_w2c(w2c)
    torch.testing.assert_close(cam.pytorch3d_to_opencv_w2c(R, T), w2c)
    # PyTorch3D: X_cam = X_world @ R + T with x left, y up: a point at +x_cv has -x in p3d
    X = torch.tensor([[0.3, -0.2, 2.0]], dtype=f64)
    x_cv = cam.transform_points(w2c, X)
    x_p3d = X @ R + T
    torch.testing.assert_close(x_p3d, x_cv * torch.tensor([-1.0, -1.0, 1.0], dtype=f64))


def test_look_at_and_quaternions():
    eye = torch.tensor([1.0, -1.0, -3.0], dtype=f64)
    target = torch.tensor([0.0, 0.0, 2.0], dtype=f64)
    w2c = cam.look_at_w2c(eye, target, torch.tensor([0.0, -1.0, 0.0], dtype=f64))
    K = cam.intrinsics_from_fov(60.0, 100, 100)
    uv, z = cam.project_world_to_pixels(target[None], K, w2c)
    torch.testing.assert_close(uv[0], K[:2, 2])
    assert bool(cam.is_rotation(w2c[:3, :3]))
    gen = torch.Generator().manual_seed(0)
    R = cam.quat_to_rotmat(torch.randn(50, 4, generator=gen, dtype=f64))
    torch.testing.assert_close(cam.quat_to_rotmat(cam.rotmat_to_quat(R)), R)


def test_slerp_endpoints_and_constant_angular_speed():
    q0 = cam.rotmat_to_quat(torch.eye(3, dtype=f64))
    R1 = cam.axis_angle_to_rotmat(torch.tensor([0.2, 1.0, 0.1], dtype=f64), torch.tensor(1.2, dtype=f64))
    q1 = cam.rotmat_to_quat(R1)
    t = torch.linspace(0, 1, 11, dtype=f64)
    q = cam.slerp(q0, q1, t)
    torch.testing.assert_close(cam.quat_to_rotmat(q[0]), torch.eye(3, dtype=f64))
    torch.testing.assert_close(cam.quat_to_rotmat(q[-1]), R1)
    Rs = cam.quat_to_rotmat(q)
    steps = cam.rotation_angle_deg(Rs[:-1].transpose(-1, -2) @ Rs[1:])
    torch.testing.assert_close(steps, torch.full_like(steps, math.degrees(1.2) / 10))


def test_euler_directions():
    z = torch.tensor(0.0, dtype=f64)
    R = cam.euler_to_rotmat(torch.tensor(0.3, dtype=f64), z, z)  # yaw right: forward axis gains +x
    assert float(R[0, 2]) > 0
    R = cam.euler_to_rotmat(z, torch.tensor(0.3, dtype=f64), z)  # pitch up: forward axis gains -y (up)
    assert float(R[1, 2]) < 0


def test_check_poses_rejects_bad_input():
    good = torch.eye(4, dtype=f64)[None].repeat(2, 1, 1)
    cam.check_poses(good, "ok")
    bad = good.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(InputError, match="frame 1"):
        cam.check_poses(bad, "poses")
    bad = good.clone()
    bad[0, :3, :3] *= 2
    with pytest.raises(InputError, match="not a rotation"):
        cam.check_poses(bad, "poses")
