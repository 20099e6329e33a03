"""Consistency scores of a generated video, without ground truth (report keys: ``docs/report.md``).

Pure tensor functions; frames are (N, 3, H, W) float in [-1, 1] and every score is computed in [0, 1] colour units.

- **memory agreement**: each generated frame against the memory's view of it (the decoded latent read, or the RGB
  render) over the pixels the memory saw (not holes, not a chunk's pinned first frame): PSNR and SSIM.
- **temporal change** (stability): consecutive frames compared at the same surface points, found by unprojecting
  the memory read's depth and projecting it into both cameras; mean absolute difference, 0 = perfectly stable.
- **revisit consistency**: where the path comes back near an earlier pose, the later frame against the earlier one
  warped by the known cameras and the later frame's read depth: PSNR and SSIM; None without a revisit.

Everything stays on the frames' device; the pipeline reads a chunk's scores back with one ``tolist()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mirage._check import check_shape
from mirage.camera import angle_deg_from_trace

#: PSNR written to a report for frames that agree exactly (JSON has no infinity).
PSNR_CAP_DB = 100.0
#: Revisit thresholds: a pose within this rotation (degrees) and translation (fraction of the scene depth).
REVISIT_MAX_DEG = 5.0
REVISIT_MAX_FRACTION = 0.05
#: At most this many revisit pairs are scored per video (evenly spread over the later frames).
REVISIT_MAX_PAIRS = 16


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] float32."""
    return (x.float() + 1.0) * 0.5


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame mean squared error over a mask.

    Args:
        a, b: (N, 3, H, W) float in [-1, 1]. mask: (N, H, W) bool (default: every pixel).
    Returns:
        mse: (N,) float32 in [0, 1] colour units squared (0 where the mask is empty); n: (N,) float32 pixels counted.
    """
    check_shape(a, ("N", 3, "H", "W"), "a")
    check_shape(b, tuple(a.shape), "b")
    err = (to_unit(a) - to_unit(b)).square().mean(1)  # (N, H, W)
    m = torch.ones_like(err) if mask is None else mask.float()
    n = m.sum((1, 2))  # (N,)
    return (err * m).sum((1, 2)) / n.clamp(min=1.0), n


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of a mean squared error in [0, 1] units (peak 1): ``10 log10(1 / mse)``; +inf where mse is 0."""
    return -10.0 * torch.log10(mse)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) PSNR in dB of frames (N, 3, H, W) [-1, 1] over ``mask`` (N, H, W) bool; +inf for identical frames."""
    return psnr_from_mse(masked_mse(a, b, mask)[0])


def _gaussian_window(size: int = 11, sigma: float = 1.5, *, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim_map(a: torch.Tensor, b: torch.Tensor, *, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004: gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1; the
    same as scikit-image's ``gaussian_weights=True`` with ``sigma=1.5, use_sample_covariance=False``), averaged
    over the colour channels.

    Args:
        a, b: (N, 3, H, W) float in [-1, 1].
    Returns:
        (N, H, W) float32 in [-1, 1]; 1 where the frames agree. Borders are padded by reflection.
    """
    check_shape(a, ("N", 3, "H", "W"), "a")
    check_shape(b, tuple(a.shape), "b")
    x, y = to_unit(a), to_unit(b)
    g = _gaussian_window(size, sigma, device=x.device)
    c = x.shape[1]
    pad = size // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable gaussian, per channel: (N, 3, H, W)
        t = F.pad(t, (pad, pad, pad, pad), mode=mode)
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)

    return ssim_from_moments(blur(x), blur(y), blur(x * x), blur(y * y), blur(x * y))


def ssim_from_moments(mx: torch.Tensor, my: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor,
                      xy: torch.Tensor) -> torch.Tensor:
    """SSIM from the windowed moments of two images in [0, 1] (K1 0.01, K2 0.03, data range 1): the means ``mx``,
    ``my`` and the means of ``x * x``, ``y * y``, ``x * y``, each (N, C, H, W). Returns (N, H, W), averaged over C."""
    c1, c2 = 0.01**2, 0.03**2
    vx = xx - mx.square()
    vy = yy - my.square()
    cxy = xy - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx.square() + my.square() + c1) * (vx + vy + c2))
    return s.mean(1)  # (N, H, W)


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) mean SSIM (:func:`ssim_map`) of frames (N, 3, H, W) [-1, 1] over ``mask`` (N, H, W) bool (NaN if empty)."""
    s = ssim_map(a, b)
    m = torch.ones_like(s) if mask is None else mask.float()
    return (s * m).sum((1, 2)) / m.sum((1, 2))


# ----------------------------------------------------------------------------------------------------------------
# geometry: where the surface seen by one camera lands in another


def sample_through_depth(frames: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, depth_ref: torch.Tensor,
                         K_ref: torch.Tensor, c2w_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The colours of ``frames`` where the surface seen at each pixel of the reference cameras lands in their
    cameras (bilinear, pixel centres at integers).

    A reference pixel (u, v) at z-depth d lands at ``p = d * A @ (u, v, 1) + b`` in homogeneous pixels of the frame's
    camera, with ``A = K w2c[:3, :3] c2w_ref-rotation K_ref^-1`` and ``b = K (w2c c2w_ref)[:3, 3]``: one 3x3 map and
    a translation per camera pair, composed in float64, then a handful of element-wise ops at full resolution (no
    world-space points, no batched 3x3 matmuls).

    Args:
        frames: (N, 3, H, W) float in [-1, 1]; K: (N, 3, 3) pixel intrinsics; w2c: (N, 4, 4) their cameras.
        depth_ref: (N, h, w) z of the reference views, scene units (0 = unknown: the caller masks it);
            K_ref: (N, 3, 3); c2w_ref: (N, 4, 4).
    Returns:
        colours: (N, 3, h, w) float32; inside: (N, h, w) bool, in front of the camera and inside the image.
    """
    n, h, w = depth_ref.shape
    H, W = frames.shape[-2:]
    dev = depth_ref.device
    ref_to_cam = w2c.to(dev).double() @ c2w_ref.to(dev).double()  # (N, 4, 4): reference camera -> frame camera
    K64 = K.to(dev).double()
    A = (K64 @ ref_to_cam[:, :3, :3] @ torch.linalg.inv_ex(K_ref.to(dev).double()).inverse).float()  # (N, 3, 3)
    b = (K64 @ ref_to_cam[:, :3, 3:])[..., 0].float()  # (N, 3)
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                          torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")  # (h, w)
    d = depth_ref.float()

    def row(i: int) -> torch.Tensor:  # (N, h, w) the i-th homogeneous coordinate
        a = A[:, i, :, None, None]
        return d * (a[:, 0] * u + a[:, 1] * v + a[:, 2]) + b[:, i, None, None]

    px, py, z = row(0), row(1), row(2)
    zs = z.clamp(min=1e-6)
    x, y = px / zs, py / zs
    inside = (z > 1e-6) & (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)
    grid = torch.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], -1)  # (N, h, w, 2), align_corners=False
    grid = torch.where(inside[..., None], grid, 0.0)
    return F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=False), inside


def upsample_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Latent-grid depth (T, h, w) (0 = no surface) -> (T, H, W), nearest: a pixel takes the token above it."""
    return F.interpolate(depth[:, None].float(), size=size, mode="nearest-exact")[:, 0]


# ----------------------------------------------------------------------------------------------------------------
# the three scores


def memory_agreement(frames: torch.Tensor, reads: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Generated frames against the memory's view of them.

    Args:
        frames: (F, 3, H, W) [-1, 1] generated. reads: (F, 3, H, W) [-1, 1] what the memory showed for each frame.
        seen: (F, H, W) bool, pixels the memory saw (False in holes, on the pinned first frame, and on frames whose
            read was made at another pose).
    Returns:
        (3, F) float32: mse (in [0, 1] units squared), mean SSIM, pixels counted (0: the frame is not scored).
    """
    mse, n = masked_mse(frames, reads, seen)
    s = torch.nan_to_num(ssim(frames, reads, seen), nan=0.0)
    return torch.stack([mse, s, n])


def temporal_change(frames: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, depth_ref: torch.Tensor,
                    K_ref: torch.Tensor, c2w_ref: torch.Tensor) -> torch.Tensor:
    """Frame-to-frame change at the same surface points: for frame t >= 1 the reference depth ``depth_ref[t]`` (the
    memory read of the latent frame t belongs to, seen from that frame's camera ``K_ref[t]``, ``c2w_ref[t]``) is
    unprojected to world points, projected into cameras t - 1 and t, and both frames are sampled there. Camera
    motion is compensated; what remains is flicker and drift.

    Args:
        frames: (F, 3, H, W) [-1, 1]. K: (F, 3, 3) pixel intrinsics; w2c: (F, 4, 4) the frames' cameras.
        depth_ref: (F, H, W) z in scene units, 0 = no surface. K_ref: (F, 3, 3); c2w_ref: (F, 4, 4) its cameras.
    Returns:
        (2, F) float32: mean absolute change in [0, 1] units (0 = identical), points counted (entry 0 is 0: no
        previous frame).
    """
    f = frames.shape[0]
    out = torch.zeros(2, f, device=frames.device)
    if f < 2:
        return out
    a, ia = sample_through_depth(frames[:-1], K[:-1], w2c[:-1], depth_ref[1:], K_ref[1:], c2w_ref[1:])  # (F-1, 3, H, W)
    b, ib = sample_through_depth(frames[1:], K[1:], w2c[1:], depth_ref[1:], K_ref[1:], c2w_ref[1:])
    m = ((depth_ref[1:] > 0) & ia & ib).flatten(1).float()  # (F-1, P)
    a, b = a.flatten(2), b.flatten(2)  # (F-1, 3, P)
    diff = (to_unit(a) - to_unit(b)).abs().mean(1)  # (F-1, P)
    n = m.sum(1)
    out[0, 1:] = (diff * m).sum(1) / n.clamp(min=1.0)
    out[1, 1:] = n
    return out


def warp_to(src: torch.Tensor, K_src: torch.Tensor, w2c_src: torch.Tensor, depth_dst: torch.Tensor,
            K_dst: torch.Tensor, c2w_dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward warp: ``src`` frames seen from the destination cameras, through the destination depth.

    Args:
        src: (N, 3, H, W) [-1, 1]; K_src (N, 3, 3), w2c_src (N, 4, 4) its cameras.
        depth_dst: (N, H, W) z of the destination views, scene units, 0 = unknown; K_dst (N, 3, 3), c2w_dst (N, 4, 4).
    Returns:
        warped: (N, 3, H, W) float32 [-1, 1]; valid: (N, H, W) bool (known depth, lands inside ``src``).
    """
    warped, inside = sample_through_depth(src, K_src, w2c_src, depth_dst, K_dst, c2w_dst)
    return warped, inside & (depth_dst > 0)


def revisit_pairs(w2c: torch.Tensor, candidates: list[int], scene_depth: float, *,
                  max_deg: float = REVISIT_MAX_DEG, max_fraction: float = REVISIT_MAX_FRACTION,
                  max_pairs: int = REVISIT_MAX_PAIRS) -> list[tuple[int, int]]:
    """Frame pairs (i, j), i < j, where the camera of frame j comes back near the camera of frame i after leaving.

    "Near": rotation between the two poses under ``max_deg`` degrees and camera centres closer than
    ``max_fraction * scene_depth``. "After leaving": some frame between i and j is not near i, so a camera that
    stands still (or a chunk's overlap frame) is not a revisit. For each later frame j in ``candidates`` (the frames
    with a depth) the nearest such i is kept; at most ``max_pairs``, spread evenly over j.

    Args:
        w2c: (N, 4, 4) world-to-camera of the whole video (any device; read on the CPU, float64).
        candidates: frame indices that may be the later frame j. scene_depth: median scene depth, scene units.
    Returns:
        [(i, j), ...] sorted by j.
    """
    check_shape(w2c, ("N", 4, 4), "w2c")
    w2c = w2c.detach().cpu().double()
    R = w2c[:, :3, :3]
    centre = -(R.transpose(-1, -2) @ w2c[:, :3, 3:])[..., 0]  # (N, 3) camera centres, world
    # the traces of R_i R_j^T from one (N, 9) x (9, N) product, not N x N 3x3 products
    flat = R.reshape(-1, 9)
    rot = angle_deg_from_trace(flat @ flat.T)  # (N, N) degrees between poses
    dist = torch.cdist(centre, centre)  # (N, N)
    near = (rot < max_deg) & (dist < max_fraction * scene_depth)  # (N, N)
    N = near.shape[0]
    idx = torch.arange(N)
    # left[i, j]: some frame k with i < k < j is not near i (the camera left i's neighbourhood in between)
    away = (~near & (idx[None, :] > idx[:, None])).long().cumsum(1)  # (N, N) frames after i, up to j, not near i
    left = torch.zeros_like(near)
    left[:, 1:] = away[:, :-1] > 0
    ok = near & left & (idx[:, None] < idx[None, :])  # (N, N) [i, j]: i is a revisit of j's camera
    score = torch.where(ok, rot / max_deg + dist / (max_fraction * scene_depth), torch.inf)  # lower: nearer
    js = sorted(set(candidates))
    best = score[:, js].argmin(0).tolist() if js else []  # the first i of the lowest score
    has = ok[:, js].any(0).tolist() if js else []
    pairs = [(i, j) for i, j, h in zip(best, js, has, strict=True) if h]
    if len(pairs) > max_pairs:
        pick = torch.linspace(0, len(pairs) - 1, max_pairs).round().long().tolist()
        pairs = [pairs[k] for k in pick]
    return pairs


def revisit_agreement(earlier: torch.Tensor, K_i: torch.Tensor, w2c_i: torch.Tensor, later: torch.Tensor,
                      depth_j: torch.Tensor, K_j: torch.Tensor, c2w_j: torch.Tensor) -> torch.Tensor:
    """The later frames of revisit pairs against the earlier frames warped into their cameras.

    Args:
        earlier: (P, 3, H, W) [-1, 1] frames i; K_i (P, 3, 3), w2c_i (P, 4, 4) their cameras.
        later: (P, 3, H, W) [-1, 1] frames j; depth_j (P, H, W) their depth (scene units, 0 = unknown);
            K_j (P, 3, 3), c2w_j (P, 4, 4).
    Returns:
        (3, P) float32: mse ([0, 1] units squared), mean SSIM, pixels counted.
    """
    warped, valid = warp_to(earlier, K_i, w2c_i, depth_j, K_j, c2w_j)
    return memory_agreement(later, warped, valid)


# ----------------------------------------------------------------------------------------------------------------
# summaries (host numbers, after the one read-back per chunk)


@dataclass
class FrameScores:
    """Per-frame scores of a run of frames (host lists, one entry per frame; None where a frame is not scored)."""

    agreement_mse: list[float | None] = field(default_factory=list)
    agreement_ssim: list[float | None] = field(default_factory=list)
    agreement_n: list[float] = field(default_factory=list)
    change: list[float | None] = field(default_factory=list)
    change_n: list[float] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: list[list[float]]) -> FrameScores:
        """From the 5 rows (agreement mse, ssim, n; change, n) of :func:`memory_agreement` and
        :func:`temporal_change` stacked and read back with one ``tolist()``."""
        mse, s, n, ch, chn = rows
        return cls([m if k > 0 else None for m, k in zip(mse, n, strict=True)], [v if k > 0 else None for v, k in zip(s, n, strict=True)],
                   list(n), [c if k > 0 else None for c, k in zip(ch, chn, strict=True)], list(chn))

    def tail(self, start: int) -> FrameScores:
        """The frames from ``start`` on (a chunk without its overlap frame)."""
        return FrameScores(*(getattr(self, k)[start:] for k in self.__dataclass_fields__))

    def extend(self, other: FrameScores) -> None:
        for k in self.__dataclass_fields__:
            getattr(self, k).extend(getattr(other, k))

    def add_chunk(self, rows: list[list[float]], *, overlap: bool) -> FrameScores:
        """Append a chunk's rows (:func:`chunk_scores` read back); ``overlap``: its first frame is the previous
        chunk's last, already counted. Returns the chunk's own scores (all its frames)."""
        chunk = FrameScores.from_rows(rows)
        self.extend(chunk.tail(1) if overlap else chunk)
        return chunk

    def summary(self) -> dict:
        """``memory_agreement_psnr`` (dB, pooled mse over every counted pixel, capped at :data:`PSNR_CAP_DB`),
        ``memory_agreement_ssim`` (pixel-weighted mean), ``temporal_change`` (pixel-weighted mean); None when no
        frame was scored."""
        return {"memory_agreement_psnr": psnr_db(_wmean(self.agreement_mse, self.agreement_n)),
                "memory_agreement_ssim": _wmean(self.agreement_ssim, self.agreement_n),
                "temporal_change": _wmean(self.change, self.change_n)}

    def series(self) -> dict:
        """Per-frame lists for plots: agreement PSNR (dB, capped) and temporal change (None where not scored)."""
        return {"memory_agreement_psnr": [psnr_db(m) for m in self.agreement_mse],
                "temporal_change": list(self.change)}


def psnr_db(mse: float | None) -> float | None:
    """Host PSNR of a mean squared error in [0, 1] units, capped at :data:`PSNR_CAP_DB`; None for None."""
    if mse is None or not math.isfinite(mse):
        return None
    return PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else -10.0 * math.log10(mse)


def _wmean(values: list[float | None], weights: list[float]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total > 0 else None


def revisit_summary(rows: list[list[float]] | None, pairs: list[tuple[int, int]]) -> dict:
    """``revisit_psnr`` (dB, pooled, capped), ``revisit_ssim``, ``revisit_pairs`` ([[i, j], ...]) from the rows of
    :func:`revisit_agreement` read back; the scores are None without a revisit."""
    if not rows or not pairs:
        return {"revisit_psnr": None, "revisit_ssim": None, "revisit_pairs": []}
    mse, s, n = rows
    return {"revisit_psnr": psnr_db(_wmean(mse, n)), "revisit_ssim": _wmean(s, n),
            "revisit_pairs": [[i, j] for i, j in pairs]}


# ----------------------------------------------------------------------------------------------------------------
# what the pipeline calls


def read_groups(num_frames: int, read_stride: int, *, device=None) -> torch.Tensor:
    """(F,) long: for each pixel frame of a chunk, the latent read it belongs to, when the reads are made at pixel
    frames ``0, s, 2 s, ..., F - 1`` (``s = read_stride``; Wan: 4, frames 1-4 -> read 1). Device arithmetic only."""
    return (torch.arange(num_frames, device=device) + read_stride - 1) // read_stride


#: Frames scored per batch inside a chunk: bounds the working memory of SSIM and the warps (about 16 x 30 floats a
#: pixel) whatever the chunk length.
SCORE_BLOCK = 16


def chunk_scores(frames: torch.Tensor, reads: torch.Tensor, holes: torch.Tensor, pixel_holes: torch.Tensor | None,
                 depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, c2w: torch.Tensor,
                 read_stride: int) -> torch.Tensor:
    """Memory agreement and temporal change of one chunk, on the frames' device (no host sync).

    Args:
        frames: (F, 3, H, W) [-1, 1] generated; frame 0 is the chunk's pinned, known frame.
        reads: (F, 3, H, W) [-1, 1] the memory's view of each frame (the RGB render, or the decoded latent read of
            the frame's latent group). holes: (T, h, w) bool, the read's latent holes; pixel_holes: (F, H, W) bool
            (RGB memory) or None. depth: (T, h, w) float32 the read's z (scene units, 0 in holes).
        K: (F, 3, 3) pixel intrinsics; w2c, c2w: (F, 4, 4). read_stride: the latent reads are made at pixel frames
            ``0, s, 2 s, ..., F - 1`` (Wan: 4; 1 without temporal packing).
    Returns:
        (5, F) float32: the rows of :func:`memory_agreement` then :func:`temporal_change` (read them back with one
        ``tolist()`` into :meth:`FrameScores.from_rows`).
    """
    n, _, H, W = frames.shape
    dev = frames.device
    ts = read_stride
    out = torch.zeros(5, n, device=dev)
    # memory agreement: the RGB memory rendered every frame at its own pose; a latent read holds one view per
    # group, made at the group's last frame, so only those frames are scored. Frame 0 is pinned: never scored.
    scored = slice(1, None) if pixel_holes is not None else slice(ts, None, ts)
    if pixel_holes is not None:
        seen = ~pixel_holes[scored].to(dev)  # (S, H, W)
    else:
        seen = ~(upsample_depth(holes[1:].float(), (H, W)) > 0.5)  # (T - 1, H, W)
    f_s, r_s = frames[scored], reads[scored].to(dev)  # (S, 3, H, W)
    if f_s.shape[0]:
        out[:3, scored] = torch.cat([memory_agreement(f_s[b:b + SCORE_BLOCK], r_s[b:b + SCORE_BLOCK],
                                                      seen[b:b + SCORE_BLOCK]) for b in range(0, len(f_s), SCORE_BLOCK)], 1)
    # temporal change: frame t against t - 1 at the surface of t's read (its group's key frame)
    group = read_groups(n, ts, device=dev)  # (F,)
    depth_px = upsample_depth(depth, (H, W))  # (T, H, W)
    K_key, c2w_key = K[::ts], c2w[::ts]  # (T, ...): the cameras the reads were made at
    for b in range(1, n, SCORE_BLOCK):
        e = min(b + SCORE_BLOCK, n)
        g = group[b - 1:e]  # frames b-1 .. e-1: pairs (t-1, t) for t in b .. e-1
        out[3:, b:e] = temporal_change(frames[b - 1:e], K[b - 1:e], w2c[b - 1:e], depth_px[g], K_key[g], c2w_key[g])[:, 1:]
    return out


def video_revisits(frames: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, depth: dict[int, torch.Tensor],
                   scene_depth: float, device: torch.device | str) -> dict:
    """Revisit consistency of a whole video (:func:`revisit_pairs`, then :func:`revisit_agreement`).

    Args:
        frames: (N, 3, H, W) [-1, 1] the video (any device). K: (N, 3, 3); w2c: (N, 4, 4).
        depth: frame index -> (h, w) the memory read's z at that frame (latent grid, scene units, 0 = unknown).
        scene_depth: median scene depth (the translation threshold is a fraction of it). device: where to warp.
    Returns:
        :func:`revisit_summary` (one host read-back).
    """
    pairs = revisit_pairs(w2c, list(depth), scene_depth)
    if not pairs:
        return revisit_summary(None, pairs)
    i, j = (torch.tensor(x) for x in zip(*pairs, strict=True))
    H, W = frames.shape[-2:]
    d = upsample_depth(torch.stack([depth[int(k)] for k in j]).to(device), (H, W))  # (P, H, W)
    c2w = torch.linalg.inv(w2c.double()).float()
    rows = revisit_agreement(frames[i].to(device), K[i].to(device), w2c[i].to(device), frames[j].to(device), d,
                             K[j].to(device), c2w[j].to(device))
    return revisit_summary(rows.tolist(), pairs)


def video_scores(frames: FrameScores | None, revisits: dict | None) -> dict:
    """The report's top-level ``scores``: :meth:`FrameScores.summary` of every frame of the video, the revisit
    summary, and ``per_frame`` (:meth:`FrameScores.series`, one entry per video frame); all None when not scored."""
    frames = frames or FrameScores()
    return {**frames.summary(), **(revisits or revisit_summary(None, [])), "per_frame": frames.series()}
