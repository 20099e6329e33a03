"""The point store and its pending writes (mirage.memory.store): voxel de-duplication by hand-checked examples, and a
write of many views held on the device equal to the same views merged one by one."""

from __future__ import annotations

import copy

import pytest
import torch
from _store_reference import merge_as_before  # tests/_store_reference.py

from mirage.memory import VoxelWinner
from mirage.memory.store import PendingWrite, PointStore, voxel_keys


def _store(xyz) -> PointStore:
    xyz = torch.tensor(xyz, dtype=torch.float32)
    n = xyz.shape[0]
    return PointStore(xyz, torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, dtype=torch.long))


def test_merge_keeps_one_candidate_per_voxel_by_hand():
    # voxel 1.0: stored points in voxels (0,0,0) and (5,0,0)
    cand = torch.tensor([[0.5, 0.5, 0.5], [2.2, 0, 0], [2.7, 0, 0], [5.1, 0, 0], [9.0, 0, 0]])
    feats = torch.tensor([[10.0], [11.0], [12.0], [13.0], [14.0]])
    st = _store([[0.1, 0.1, 0.1], [5.5, 0.2, 0.2]])
    c = st.merge(cand, feats, birth=1, voxel_size=1.0, winner=VoxelWinner.EXISTING)
    # kept: 2.2 (first of voxel 2) and 9.0; merged: 0.5 (stored), 2.7 (same voxel as 2.2), 5.1 (stored)
    assert (c.added, c.merged, c.replaced) == (2, 3, 0)
    assert st.features[:, 0].tolist() == [0.0, 1.0, 11.0, 14.0] and st.birth.tolist() == [0, 0, 1, 1]
    st = _store([[0.1, 0.1, 0.1], [5.5, 0.2, 0.2]])
    c = st.merge(cand, feats, birth=1, voxel_size=1.0, winner=VoxelWinner.NEWEST)
    # every first candidate is taken; the two stored points of voxels 0 and 5 are replaced
    assert (c.added, c.merged, c.replaced) == (2, 3, 2)
    assert st.features[:, 0].tolist() == [10.0, 11.0, 13.0, 14.0] and st.birth.tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("winner", [VoxelWinner.EXISTING, VoxelWinner.NEWEST])
def test_a_pending_write_of_many_views_equals_their_merges_one_by_one(winner):
    g = torch.Generator().manual_seed(0)
    # candidates on a lattice of 3 voxels per axis: each view meets the store and the views before it often
    store = PointStore(torch.randint(0, 3, (20, 3), generator=g).float() + 0.5, torch.randn(20, 4, generator=g),
                       torch.zeros(20, dtype=torch.long))
    views = []
    for _ in range(5):
        xyz = torch.randint(0, 4, (30, 3), generator=g).float() + torch.rand(30, 3, generator=g) * 0.9
        mask = torch.rand(30, generator=g) > 0.25
        xyz[~mask] = float("nan")  # a masked-out candidate's position may be anything
        views.append((xyz, torch.randn(30, 4, generator=g), mask))
    one_by_one, held = copy.deepcopy(store), copy.deepcopy(store)
    want = [0, 0, 0]
    for xyz, f, m in views:  # the merge as it was, view after view
        c = merge_as_before(one_by_one, xyz[m], f[m], birth=3, voxel_size=1.0, winner=winner)
        want = [want[0] + c.added, want[1] + c.merged, want[2] + c.replaced]
    pending = PendingWrite(held, 1.0, winner)
    for xyz, f, m in views:
        pending.add(xyz, f, m)
    drawn_xyz, drawn = pending.points()
    assert len(held) == 20  # nothing changes before the commit
    c = pending.commit(3)
    assert [c.added, c.merged, c.replaced] == want and c.merged > 10
    assert (c.replaced > 0) == (winner == VoxelWinner.NEWEST)
    assert torch.equal(held.xyz, one_by_one.xyz) and torch.equal(held.features, one_by_one.features)
    assert torch.equal(held.birth, one_by_one.birth)
    assert torch.equal(drawn_xyz[drawn], held.xyz)  # what a later view of the write drew is what the store holds


def test_a_later_view_replaces_an_earlier_views_candidate_with_newest_by_hand():
    store = _store([[0.5, 0.5, 0.5]])
    pending = PendingWrite(store, 1.0, VoxelWinner.NEWEST)
    one = torch.ones(1, dtype=torch.bool)
    pending.add(torch.tensor([[7.2, 0.5, 0.5]]), torch.tensor([[20.0]]), one)  # a new voxel: added
    pending.add(torch.tensor([[7.8, 0.1, 0.9]]), torch.tensor([[30.0]]), one)  # the same voxel: replaces it
    pending.add(torch.tensor([[0.1, 0.9, 0.2]]), torch.tensor([[40.0]]), one)  # the stored point's voxel: replaces it
    c = pending.commit(1)
    assert (c.added, c.merged, c.replaced) == (1, 2, 2)
    assert store.features[:, 0].tolist() == [30.0, 40.0] and store.birth.tolist() == [1, 1]
    with pytest.raises(RuntimeError, match="already committed"):
        pending.commit(2)


def test_voxel_keys_are_positive_and_distinct_per_voxel():
    xyz = torch.tensor([[0.2, 0.2, 0.2], [0.7, 0.1, 0.9], [-0.2, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    k, far = voxel_keys(xyz, 1.0)
    assert not bool(far)
    assert bool((k > 0).all()) and k[0] == k[1] and len(set(k.tolist())) == 4
