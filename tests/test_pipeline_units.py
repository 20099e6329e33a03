"""Pure helpers of the pipeline: chunk plans, frame-count rounding, output size, dilation, hole fill."""

from __future__ import annotations

import pytest
import torch

from mirage.errors import InputError
from mirage.holefill import push_pull_fill
from mirage.inputs import output_size
from mirage.latent_space import LatentSpace
from mirage.pipeline import dilate, plan_chunks


@pytest.mark.parametrize("n,stride,expected", [(81, 4, 81), (80, 4, 81), (49, 4, 49), (50, 4, 53), (2, 4, 5), (7, 1, 7)])
def test_round_frames_to_whole_latent_frames(n, stride, expected):
    assert LatentSpace(16, 8, stride).round_frames(n) == expected


@pytest.mark.parametrize("n,chunk", [(81, 33), (33, 33), (49, 33), (161, 81), (5, 33), (97, 17)])
def test_plan_chunks_overlap_by_one_and_cover_everything(n, chunk):
    plan = plan_chunks(n, chunk)
    assert plan[0][0] == 0 and plan[-1][1] == n
    for (_, b0), (a1, _) in zip(plan, plan[1:], strict=False):
        assert a1 == b0 - 1  # one frame of overlap
    for a, b in plan:
        assert 2 <= b - a <= chunk
        assert (b - a - 1) % 4 == 0  # every chunk is 4k + 1 when n and chunk are
    # unique frames produced == n
    assert sum(b - a for a, b in plan) - (len(plan) - 1) == n


def test_plan_chunks_rejects_tiny_chunks():
    with pytest.raises(InputError, match="chunk-frames"):
        plan_chunks(10, 1)


def test_output_size_keeps_aspect_and_area():
    W, H = output_size((1024, 576), 832 * 480, 16)
    assert W % 16 == 0 and H % 16 == 0
    assert abs(W / H - 1024 / 576) < 0.05
    assert abs(W * H - 832 * 480) / (832 * 480) < 0.05
    assert output_size((832, 480), 832 * 480, 16) == (832, 480)


def test_dilate_grows_by_radius():
    m = torch.zeros(1, 7, 7, dtype=torch.bool)
    m[0, 3, 3] = True
    d = dilate(m, 1)
    assert int(d.sum()) == 9 and bool(d[0, 2:5, 2:5].all())


def test_push_pull_fill_keeps_known_and_fills_holes_from_neighbours():
    lat = torch.zeros(1, 2, 8, 8)
    lat[:, 0, :, :4] = 1.0  # left half 1, right half 0 in channel 0
    lat[:, 1] = 5.0
    holes = torch.zeros(1, 8, 8, dtype=torch.bool)
    holes[0, 3:5, 3:5] = True
    out = push_pull_fill(lat, holes)
    assert torch.equal(out[~holes[:, None].expand_as(out)], lat[~holes[:, None].expand_as(lat)])
    assert torch.allclose(out[0, 1][holes[0]], torch.full((4,), 5.0))  # constant channel stays constant
    filled = out[0, 0][holes[0]]
    assert bool(((filled > 0) & (filled < 1)).all())  # a blend of the two sides
    assert float(out[0, 0, 3, 3]) > float(out[0, 0, 3, 4])  # nearer the left side is closer to 1
