"""The library's two ways in: ``Pipeline.render`` (a whole trajectory, from a file or a tensor) and ``Pipeline.world``
(a caller moves one persistent memory chunk by chunk), which share one code path (``Pipeline._run_chunk``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mirage.config import PipelineConfig, RenderOptions
from mirage.errors import InputError
from mirage.inputs import TrajectoryOptions, check_input
from mirage.pipeline import Pipeline
from mirage.sampling import SamplingProfile
from mirage.video import read_image

REPO = Path(__file__).resolve().parents[1]
ROOM = REPO / "examples" / "room" / "image.png"
ROOM_DEPTH = REPO / "examples" / "room" / "depth.png"
W, H = 64, 48
OPTIONS = RenderOptions(size=(W, H), chunk_frames=5, steps=2, profile=SamplingProfile.FAST, fov=60.0)


@pytest.fixture(scope="module")
def pipe():
    from mirage.hub import build_tiny

    build_tiny()
    return Pipeline(PipelineConfig(preset="tiny", device="cpu"))


def test_world_steps_are_the_render_of_the_same_poses(pipe):
    """A world moved along a trajectory's poses, chunk by chunk, makes the frames render makes along it."""
    res = pipe.render(ROOM, TrajectoryOptions("orbit", frames=9), OPTIONS, depth_file=ROOM_DEPTH)
    K, w2c = res.trajectory.K.float(), res.trajectory.w2c.float()  # (9, 3, 3), (9, 4, 4) at W x H
    world = pipe.world(ROOM, OPTIONS, depth_file=ROOM_DEPTH)
    torch.testing.assert_close(world.K.cpu(), K[0])
    first = world.step(w2c[1:5], K[1:5])
    tokens_after_one = world.memory.stats().tokens
    second = world.step(w2c[5:9], K[5:9])
    assert first.shape == second.shape == (4, 3, H, W)
    frames = torch.cat([first, second]).cpu()
    torch.testing.assert_close(frames, res.frames[1:], rtol=0, atol=1e-5)
    assert [c.index for c in world.chunks] == [0, 1] and tokens_after_one > 0
    assert world.memory.stats().tokens >= tokens_after_one  # write-back grew (or kept) the memory
    assert torch.equal(world.w2c.cpu(), w2c[8])  # the world is at the last pose


def test_world_is_saved_and_continued(pipe, tmp_path):
    world = pipe.world(ROOM, OPTIONS, depth_file=ROOM_DEPTH)
    step = torch.eye(4).repeat(4, 1, 1)
    step[:, 0, 3] = torch.linspace(-0.02, -0.08, 4)  # the camera moves right
    world.step(step)
    world.save(tmp_path / "m.safetensors")
    again = pipe.world(ROOM, OPTIONS, depth_file=ROOM_DEPTH, memory_from=tmp_path / "m.safetensors")
    assert again.memory.stats().tokens == world.memory.stats().tokens
    assert again.step(step).shape == (4, 3, H, W)


def test_world_refuses_poses_the_video_model_cannot_make(pipe):
    world = pipe.world(ROOM, OPTIONS, depth_file=ROOM_DEPTH)
    with pytest.raises(InputError, match="3 new poses; the video model makes 4k new frames"):
        world.step(torch.eye(4).repeat(3, 1, 1))
    with pytest.raises(InputError, match=r"w2c: shape \(4, 4\); pass \(F, 4, 4\)"):
        world.step(torch.eye(4))


def test_render_takes_an_image_tensor_and_a_plan(pipe):
    """A tensor renders like its file; check_input's plan is what render takes (no second planning)."""
    image = read_image(ROOM)  # (3, 480, 832) [-1, 1], as the file reads
    traj = TrajectoryOptions("orbit", frames=5)
    from_tensor = pipe.render(image, traj, OPTIONS, depth_file=ROOM_DEPTH)
    from_file = pipe.render(ROOM, traj, OPTIONS, depth_file=ROOM_DEPTH)
    assert from_tensor.report.inputs["image"] == "<tensor>"
    torch.testing.assert_close(from_tensor.frames, from_file.frames, rtol=0, atol=0)
    plan = check_input(image, traj, OPTIONS, preset="tiny", depth_file=ROOM_DEPTH)
    again = pipe.render(plan, options=OPTIONS)
    torch.testing.assert_close(again.frames, from_tensor.frames, rtol=0, atol=0)
    with pytest.raises(InputError, match="image tensor: must be finite floats"):
        check_input(torch.full((3, H, W), float("nan")), traj, OPTIONS, preset="tiny")
    with pytest.raises(InputError, match="render: no trajectory"):
        pipe.render(check_input(image, None, OPTIONS, preset="tiny"), options=OPTIONS)


def test_scores_can_be_turned_off(pipe):
    """RenderOptions(scores=False) (--no-scores): no decode of the reads, null scores; on (the default): scored."""
    from dataclasses import replace

    traj = TrajectoryOptions("orbit", frames=5)
    on = pipe.render(ROOM, traj, OPTIONS, depth_file=ROOM_DEPTH).report
    off = pipe.render(ROOM, traj, replace(OPTIONS, scores=False), depth_file=ROOM_DEPTH).report
    assert on.scores["memory_agreement_psnr"] is not None and on.chunks[0]["memory_agreement_psnr"] is not None
    assert off.scores["memory_agreement_psnr"] is None and off.chunks[0]["memory_agreement_psnr"] is None
    assert "decode_reads" in on.timing_ms and "decode_reads" not in off.timing_ms
    assert off.settings["scores"] is False


def test_a_step_longer_than_the_worlds_chunks_says_which_slots_it_lacks(pipe):
    """The memory keeps the latent slots of the chunk length the world was opened for (RenderOptions.chunk_frames);
    a longer step reads the last kept slot past them, and says so once."""
    world = pipe.world(ROOM, OPTIONS, depth_file=ROOM_DEPTH)  # chunks of 5 frames: slots 0 and 1
    assert world.memory.store.slots == 1
    world.step(torch.eye(4).repeat(4, 1, 1))
    assert not any("steady latent slots" in w for w in world.warnings)
    world.step(torch.eye(4).repeat(8, 1, 1))  # 9 frames: slots 1 and 2
    world.step(torch.eye(4).repeat(8, 1, 1))
    noted = [w for w in world.warnings if "steady latent slots" in w]
    assert len(noted) == 1 and "keeps 1" in noted[0] and "chunk_frames >= 9" in noted[0]
