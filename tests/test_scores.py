"""Consistency scores (mirage.scores) on constructed cases with known values, and in a tiny render's report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mirage import scores
from mirage.camera import intrinsics_from_fov, look_at_w2c, rotation_angle_deg, w2c_to_c2w
from mirage.config import PipelineConfig, RenderOptions
from mirage.errors import MirageError
from mirage.inputs import TrajectoryOptions
from mirage.pipeline import Pipeline
from mirage.sampling import SamplingProfile

H, W = 24, 32
Z = 4.0  # depth of the textured plane, scene units


def textured(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, H, W, generator=g) * 2 - 1


def plane_frames(centres_x: list[float], K: torch.Tensor) -> torch.Tensor:
    """Frames of a smooth pattern on the plane z = Z, seen by cameras looking down +z from (cx, 0, 0)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    out = []
    for cx in centres_x:
        X = (u - K[0, 2]) * Z / K[0, 0] + cx  # world coordinates of each pixel's surface point
        Y = (v - K[1, 2]) * Z / K[1, 1]
        out.append(torch.stack([torch.sin(3 * X), torch.cos(2 * Y + X), torch.sin(X * Y)]))
    return torch.stack(out).float()


def translated(cx: float) -> torch.Tensor:
    w2c = torch.eye(4)
    w2c[0, 3] = -cx
    return w2c


# ------------------------------------------------------------------------------------------------ PSNR and SSIM


def test_identical_frames_score_perfectly():
    a = textured()
    assert torch.isinf(scores.psnr(a, a)).all()
    assert torch.allclose(scores.ssim(a, a), torch.ones(2), atol=1e-5)
    mse, n = scores.masked_mse(a, a)
    assert mse.tolist() == [0.0, 0.0] and n.tolist() == [H * W, H * W]


def test_a_known_colour_change_gives_its_psnr():
    a = textured() * 0.5
    delta = 0.1  # in [-1, 1] units: 0.05 in [0, 1] units, so MSE = 0.0025 and PSNR = 10 log10(1 / 0.0025)
    got = scores.psnr(a, a + delta)
    assert got.tolist() == pytest.approx([10 * math.log10(1 / (delta / 2) ** 2)] * 2, abs=1e-3)
    assert got[0].item() == pytest.approx(26.0206, abs=1e-3)


def test_psnr_counts_only_the_mask():
    a = textured()
    b = a.clone()
    b[:, :, :, W // 2:] = -a[:, :, :, W // 2:]  # the right half differs
    mask = torch.zeros(2, H, W, dtype=torch.bool)
    mask[:, :, : W // 2] = True
    assert torch.isinf(scores.psnr(a, b, mask)).all()
    assert (scores.psnr(a, b) < 20).all()
    mask[:, :, W // 2 - 6:] = False  # SSIM's 11x11 window reaches 5 pixels across the edge
    assert torch.allclose(scores.ssim(a, b, mask), torch.ones(2), atol=1e-5)
    assert (scores.ssim(a, b) < 0.9).all()


def test_ssim_of_flat_frames_is_the_luminance_term():
    # constant frames have no variance: SSIM = (2 x y + C1) / (x^2 + y^2 + C1), in [0, 1] units
    x, y = 0.3, 0.6
    a = torch.full((1, 3, H, W), 2 * x - 1)
    b = torch.full((1, 3, H, W), 2 * y - 1)
    c1 = 0.01**2
    assert scores.ssim(a, b).item() == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), rel=1e-4)


def test_ssim_matches_scikit_image():
    from skimage import metrics  # the dev extra installs it: the reference SSIM
    a, b = textured(1, 1), (textured(1, 1) + 0.3 * textured(1, 2)).clamp(-1, 1)
    ours = scores.ssim_map(a, b)[0, 8:-8, 8:-8].mean().item()  # away from the border handling
    x, y = scores.to_unit(a)[0].permute(1, 2, 0).numpy(), scores.to_unit(b)[0].permute(1, 2, 0).numpy()
    _, full = metrics.structural_similarity(x, y, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, full=True)
    assert ours == pytest.approx(float(full[8:-8, 8:-8].mean()), abs=1e-4)


# ------------------------------------------------------------------------------------------------ warps


def test_warp_by_a_known_shift_makes_frames_agree():
    K = intrinsics_from_fov(60.0, W, H, dtype=torch.float32)
    shift_px = 3.0
    dx = shift_px * Z / float(K[0, 0])  # a camera translation that moves the plane by 3 pixels
    frames = plane_frames([0.0, dx], K)
    w2c = torch.stack([translated(0.0), translated(dx)])
    depth = torch.full((1, H, W), Z)
    warped, valid = scores.warp_to(frames[:1], K[None], w2c[:1], depth, K[None], w2c_to_c2w(w2c[1:]))
    assert valid[0, :, : W - 4].all() and not valid[0, :, -2:].any()  # the last 3 columns come from outside
    assert scores.psnr(frames[1:], warped, valid).item() > 40
    assert scores.psnr(frames[1:], frames[:1], valid).item() < 20  # unwarped they disagree


def test_temporal_change_is_zero_for_a_still_scene_and_compensates_camera_motion():
    K = intrinsics_from_fov(60.0, W, H, dtype=torch.float32)
    Ks = K.expand(3, 3, 3)
    dx = 2.0 * Z / float(K[0, 0])
    still = plane_frames([0.0, 0.0, 0.0], K)
    eye = torch.eye(4).expand(3, 4, 4)
    depth = torch.full((3, H, W), Z)
    out = scores.temporal_change(still, Ks, eye, depth, Ks, eye)
    assert out[0].tolist() == [0.0, 0.0, 0.0] and out[1, 1:].tolist() == [H * W] * 2

    moving = plane_frames([0.0, dx, 2 * dx], K)
    w2c = torch.stack([translated(0.0), translated(dx), translated(2 * dx)])
    out = scores.temporal_change(moving, Ks, w2c, depth, Ks, w2c_to_c2w(w2c))
    assert out[0, 1:].max().item() < 2e-3  # the cameras explain the motion
    wrong = scores.temporal_change(moving, Ks, eye, depth, Ks, eye)  # cameras that claim no motion
    assert wrong[0, 1:].min().item() > 0.05
    flicker = moving.clone()
    flicker[2] += 0.2  # a brightness jump of 0.1 in [0, 1] units at frame 2
    out = scores.temporal_change(flicker, Ks, w2c, depth, Ks, w2c_to_c2w(w2c))
    assert out[0, 2].item() == pytest.approx(0.1, abs=3e-3) and out[0, 1].item() < 2e-3


# ------------------------------------------------------------------------------------------------ revisits


def orbit(n: int, degrees: float) -> torch.Tensor:
    poses = []
    for a in torch.linspace(0, math.radians(degrees), n):
        eye = torch.tensor([Z * math.sin(a), 0.0, -Z * math.cos(a)])
        poses.append(look_at_w2c(eye, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0])))
    return torch.stack(poses).float()


def test_revisit_pairs_find_a_full_orbit_and_nothing_else():
    full = orbit(25, 360.0)  # the last pose is the first one again
    assert scores.revisit_pairs(full, list(range(25)), Z) == [(0, 24)]
    assert scores.revisit_pairs(orbit(25, 180.0), list(range(25)), Z) == []  # half an orbit never comes back
    still = torch.eye(4).expand(9, 4, 4)
    assert scores.revisit_pairs(still, list(range(9)), Z) == []  # a camera that never left is no revisit
    there_and_back = torch.stack([translated(x) for x in [0.0, 1.0, 2.0, 1.0, 0.0]])
    assert scores.revisit_pairs(there_and_back, [3, 4], Z) == [(1, 3), (0, 4)]
    assert scores.revisit_pairs(there_and_back, [4], Z, max_fraction=0.0) == []


def _revisit_pairs_by_definition(w2c: torch.Tensor, candidates: list[int], scene_depth: float) -> list:
    """revisit_pairs' docstring read literally, one pair at a time (the reference of the vectorised form)."""
    w2c = w2c.double()
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    centre = -(R.transpose(-1, -2) @ t[..., None])[..., 0]

    def near(i, j):
        rot = float(rotation_angle_deg(R[i] @ R[j].T))
        dist = float((centre[i] - centre[j]).norm())
        return rot < scores.REVISIT_MAX_DEG and dist < scores.REVISIT_MAX_FRACTION * scene_depth, rot, dist

    pairs = []
    for j in sorted(set(candidates)):
        best = None
        for i in range(j):
            ok, rot, dist = near(i, j)
            if ok and not all(near(i, k)[0] for k in range(i + 1, j)):
                score = rot / scores.REVISIT_MAX_DEG + dist / (scores.REVISIT_MAX_FRACTION * scene_depth)
                if best is None or score < best[0]:
                    best = (score, i)
        if best is not None:
            pairs.append((best[1], j))
    return pairs


@pytest.mark.parametrize("seed", range(4))
def test_revisit_pairs_match_their_definition_on_wandering_cameras(seed):
    g = torch.Generator().manual_seed(seed)
    # a camera that drifts back and forth along x and turns a little: many near poses, many leave-and-return runs
    xs = (torch.rand(40, generator=g) * 0.4 * Z).tolist()
    poses = []
    for k, x in enumerate(xs):
        a = 0.05 * math.sin(k)  # radians
        eye = torch.tensor([x, 0.0, -Z])
        poses.append(look_at_w2c(eye, torch.tensor([x + Z * math.tan(a), 0.0, 0.0]), torch.tensor([0.0, -1.0, 0.0])))
    w2c = torch.stack(poses).float()
    cand = sorted(torch.randperm(40, generator=g)[:25].tolist())
    want = _revisit_pairs_by_definition(w2c, cand, Z)
    assert len(want) >= 5  # the case is not empty
    assert scores.revisit_pairs(w2c, cand, Z, max_pairs=10**6) == want


def test_video_revisits_score_a_matching_revisit():
    K = intrinsics_from_fov(60.0, W, H, dtype=torch.float32)
    dx = 1.0 * Z / float(K[0, 0])  # 0.14 < 5% of Z
    xs = [0.0, 1.0, dx]  # goes away, comes back 1 pixel off the first pose
    frames = plane_frames(xs, K)
    w2c = torch.stack([translated(x) for x in xs])
    depth = {2: torch.full((H // 4, W // 4), Z)}
    out = scores.video_revisits(frames, K.expand(3, 3, 3), w2c, depth, scene_depth=Z, device="cpu")
    assert out["revisit_pairs"] == [[0, 2]] and out["revisit_psnr"] > 40 and out["revisit_ssim"] > 0.95
    bad = frames.clone()
    bad[2] = -bad[2]
    out = scores.video_revisits(bad, K.expand(3, 3, 3), w2c, depth, scene_depth=Z, device="cpu")
    assert out["revisit_psnr"] < 15 and out["revisit_ssim"] < 0.5
    none = scores.video_revisits(frames[:2], K.expand(2, 3, 3), w2c[:2], {1: depth[2]}, scene_depth=Z, device="cpu")
    assert none == {"revisit_psnr": None, "revisit_ssim": None, "revisit_pairs": []}


# ------------------------------------------------------------------------------------------------ chunk summaries


def test_chunk_scores_skip_holes_the_pinned_frame_and_unread_frames():
    n, frames = 5, textured(5, 3)
    reads = frames.clone()
    reads[0] = -frames[0]  # the pinned frame may differ: it is not scored
    reads[2] = -frames[2]  # a frame between latent reads: not scored
    reads[4, :, :, : W // 2] = -frames[4, :, :, : W // 2]  # where the read is a hole: not scored
    holes = torch.zeros(2, H // 4, W // 4, dtype=torch.bool)
    holes[1, :, : W // 8] = True
    eye = torch.eye(4).expand(n, 4, 4)
    K = intrinsics_from_fov(60.0, W, H, dtype=torch.float32).expand(n, 3, 3)
    rows = scores.chunk_scores(frames, reads, holes, None, torch.full((2, H // 4, W // 4), Z), K, eye, eye, 4)
    fs = scores.FrameScores.from_rows(rows.tolist())
    assert fs.agreement_n == [0, 0, 0, 0, H * W / 2] and fs.agreement_mse[4] == 0.0
    s = fs.summary()
    assert s["memory_agreement_psnr"] == scores.PSNR_CAP_DB and s["memory_agreement_ssim"] > 0.85  # window: edge
    assert s["temporal_change"] > 0.1  # random frames flicker
    assert fs.series()["memory_agreement_psnr"] == [None, None, None, None, scores.PSNR_CAP_DB]


# ------------------------------------------------------------------------------------------------ in a render


ROOM = Path(__file__).resolve().parents[1] / "examples" / "room"
OPTIONS = RenderOptions(size=(64, 48), chunk_frames=5, steps=2, profile=SamplingProfile.FAST, fov=60.0)


@pytest.fixture(scope="module")
def pipe():
    from mirage.hub import build_tiny

    build_tiny()
    return Pipeline(PipelineConfig(preset="tiny", device="cpu"))


def test_a_tiny_render_reports_finite_scores_per_chunk_and_for_the_video(pipe, tmp_path):
    res = pipe.render(ROOM / "image.png", TrajectoryOptions("orbit", frames=9), OPTIONS, depth_file=ROOM / "depth.png")
    rep = res.report.to_dict()
    assert rep["schema_version"] == 5 and len(rep["chunks"]) == 2
    for c in rep["chunks"]:
        for k in ("memory_agreement_psnr", "memory_agreement_ssim", "temporal_change"):
            assert isinstance(c[k], float) and math.isfinite(c[k]), (k, c)
        assert 0 < c["memory_agreement_psnr"] < scores.PSNR_CAP_DB and 0 <= c["temporal_change"] <= 1
    s = rep["scores"]
    assert all(math.isfinite(s[k]) for k in ("memory_agreement_psnr", "memory_agreement_ssim", "temporal_change"))
    lo, hi = sorted(c["memory_agreement_psnr"] for c in rep["chunks"])
    assert lo - 1e-6 <= s["memory_agreement_psnr"] <= hi + 1e-6  # the video pools its chunks
    series = s["per_frame"]
    assert len(series["temporal_change"]) == 9 and series["temporal_change"][0] is None
    assert series["memory_agreement_psnr"][0] is None and series["memory_agreement_psnr"][4] is not None
    assert (s["revisit_psnr"] is None) == (s["revisit_pairs"] == [])
    assert s["temporal_change"] > 0 and "scores" in rep["timing_ms"]
    assert res.reads is None  # the reads decoded for the scores are not kept without keep_reads

    from PIL import Image

    from mirage.scores_plot import PANEL, plot_scores

    png = plot_scores(rep, res.trajectory, tmp_path / "scores.png")
    with Image.open(png) as im:
        assert im.size == (2 * PANEL, PANEL + 30) and len(im.convert("RGB").getcolors(1 << 16) or []) > 10
    with pytest.raises(MirageError, match="path ending in .png"):
        plot_scores(rep, res.trajectory, tmp_path / "scores.jpg")


def test_bench_prints_the_scores_next_to_the_timings(pipe, capsys):
    from mirage.bench import BENCH_SCHEMA_VERSION, SCORE_KEYS, BenchConfig, run_bench
    from mirage.memory.types import MemoryKind
    from mirage_cli.bench import _print

    cfg = BenchConfig(config=pipe.config, options=OPTIONS, image=ROOM / "image.png", depth_file=ROOM / "depth.png",
                      frames=(5,), steps=(1,), repeats=1, warmup=0, memories=(MemoryKind.LATENT,))
    report = run_bench(cfg, pipeline=pipe)
    row = report.to_dict()["rows"][0]
    assert report.schema_version == BENCH_SCHEMA_VERSION == 4 and set(row["runs"][0]["scores"]) == set(SCORE_KEYS)
    unstaged = row["runs"][0]["unstaged_ms"]  # the report's time outside every stage, kept per run
    assert "start" in unstaged and "end" in unstaged and all(v >= 0 for v in unstaged.values())
    psnr = row["summary"]["memory_agreement_psnr"]["median"]
    assert isinstance(psnr, float) and 0 < psnr < scores.PSNR_CAP_DB
    assert row["runs"][0]["depth_frames"] == [0]  # one chunk: the last one, never written back
    # batch throughput: 3600 / end-to-end seconds of one video, the models loaded once
    total_ms = row["runs"][0]["total_ms"]
    vph = row["summary"]["videos_per_hour"]
    assert vph["median"] == pytest.approx(3.6e6 / total_ms) and vph["min_max"] == pytest.approx((vph["median"],) * 2)
    assert report.header["videos_per_hour"].startswith("videos per hour = 3600 / end-to-end seconds")
    assert report.to_dict()["header"]["videos_per_hour"] == report.header["videos_per_hour"]
    _print(report)
    out = capsys.readouterr().out
    assert "consistency scores" in out and f"{psnr:.1f}" in out
    flat = " ".join(out.split())  # the table may wrap its title at the terminal's width
    assert "videos per hour = 3600 / end-to-end seconds" in flat and f"{vph['median']:.0f}" in out
    assert f"{total_ms / 1e3:.3f}" in out


def test_worst_first_orders_by_memory_agreement_then_change():
    from mirage.parallel.data import worst_first

    def item(name, status, psnr, change):
        sc = None if psnr == "none" else {"memory_agreement_psnr": psnr, "temporal_change": change}
        return {"image": name, "video": name + ".mp4", "status": status, "scores": sc}

    items = [item("a", "done", 30.0, 0.01), item("b", "done", 12.0, 0.02), item("c", "failed", "none", None),
             item("d", "done", 30.0, 0.05), item("e", "done", None, None), item("f", "skipped", "none", None)]
    got = worst_first(items)
    assert [g["image"] for g in got] == ["b", "d", "a", "e"]  # unscored last; failed/skipped not listed
    assert got[0]["memory_agreement_psnr"] == 12.0 and got[0]["video"] == "b.mp4"


def test_cli_batch_writes_plots_and_a_worst_first_summary(pipe, tmp_path, monkeypatch, capsys):
    from _cli import run_main
    from PIL import Image

    images = tmp_path / "in"
    images.mkdir()
    room = Image.open(ROOM / "image.png").convert("RGB").resize((64, 48))
    room.save(images / "room.png")
    room.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images / "flipped.png")
    out, plots = tmp_path / "out", tmp_path / "plots"
    code, _, err = run_main(monkeypatch, capsys, "render", images, "--traj", "orbit", "--frames", "9", "--out-dir", out,
                            "--plot", plots, "--preset", "tiny", "--device", "cpu", "--size", "64x48",
                            "--chunk-frames", "5", "--steps", "2", "--fov", "60", "-q")
    assert code == 0, err
    assert sorted(p.name for p in plots.iterdir()) == ["flipped.png", "room.png"]
    summary = json.loads((out / "summary.json").read_text())
    reports = {n: json.loads((out / f"{n}.json").read_text()) for n in ("room", "flipped")}
    assert all(r["outputs"]["plot"] == str(plots / f"{n}.png") for n, r in reports.items())
    want = sorted(reports, key=lambda n: reports[n]["scores"]["memory_agreement_psnr"])
    assert [Path(w["image"]).stem for w in summary["worst_first"]] == want
    assert summary["worst_first"][0]["memory_agreement_psnr"] == reports[want[0]]["scores"]["memory_agreement_psnr"]
    assert summary["schema_version"] == 2 and summary["counts"]["done"] == 2
    code, _, err = run_main(monkeypatch, capsys, "render", images / "room.png", "--traj", "orbit", "-o",
                            tmp_path / "one.mp4", "--plot", tmp_path / "one.jpg", "--preset", "tiny", "--device", "cpu")
    assert code == 2 and "--plot" in err and ".png" in err and not (tmp_path / "one.mp4").exists()


def test_chunk_scores_in_blocks_equal_one_pass(monkeypatch):
    """A long chunk is scored in blocks of SCORE_BLOCK frames (bounded memory): the same numbers as one pass."""
    K = intrinsics_from_fov(60.0, W, H, dtype=torch.float32)
    n = 9
    dx = 0.5 * Z / float(K[0, 0])
    frames = plane_frames([i * dx for i in range(n)], K) + 0.05 * textured(n, 5)
    w2c = torch.stack([translated(i * dx) for i in range(n)])
    depth = torch.full((n, H // 4, W // 4), Z)
    holes = torch.zeros(n, H // 4, W // 4, dtype=torch.bool)
    args = (frames, frames.flip(0), holes, None, depth, K.expand(n, 3, 3), w2c, w2c_to_c2w(w2c), 1)
    whole = scores.chunk_scores(*args)
    monkeypatch.setattr(scores, "SCORE_BLOCK", 2)
    assert torch.allclose(scores.chunk_scores(*args), whole, atol=1e-5)
    assert (whole[2, 1:] == H * W).all() and whole[2, 0] == 0 and (whole[4, 1:] > 0).all()
    assert scores.read_groups(9, 4).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_a_there_and_back_render_scores_its_revisit(pipe, tmp_path):
    """A camera file that pans away and comes back: the report pairs the return with the start."""
    from mirage.trajectory.types import Trajectory

    n = 9
    K = intrinsics_from_fov(60.0, 832, 480, dtype=torch.float64).expand(n, 3, 3).clone()  # the image's own size
    xs = [0.0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 0.1, 0.0]  # 0.1 scene units a frame, out and back to the start
    w2c = torch.stack([translated(x) for x in xs]).double()
    path = tmp_path / "back.json"
    Trajectory(K=K, w2c=w2c, width=832, height=480, fps=8.0).save_json(path)
    res = pipe.render(ROOM / "image.png", TrajectoryOptions(str(path)), OPTIONS, depth_file=ROOM / "depth.png")
    s = res.report.to_dict()["scores"]
    assert [8] == [j for _, j in s["revisit_pairs"]] and s["revisit_pairs"][0][0] == 0
    assert isinstance(s["revisit_psnr"], float) and 0 < s["revisit_psnr"] <= scores.PSNR_CAP_DB
    assert -1 <= s["revisit_ssim"] <= 1
