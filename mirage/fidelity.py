"""Fidelity of the spatial memories: how close a memory's read, decoded by a VAE, is to the real target view.

For a scene folder (a source image, its depth, target views with their cameras and real images; format in
``docs/fidelity.md``) every memory is built from the source view, read at each target camera and decoded with a
real trained VAE; PSNR and SSIM against the real target image are measured over the pixels that *every* memory
covers, next to the VAE round trip of the target (encode + decode), the ceiling no memory read can beat.

Memories: the RGB point-cloud baseline (render pixels, VAE-encode) and any number of latent-memory variants
(:class:`LatentVariant`: a name and a :class:`~mirage.memory.MemoryConfig`, e.g. bilinear / nearest / closest
splats and the polyphase init, ``phases`` = 2 or 4, whose shifted encodings come from :func:`encode_phases`).

Everything runs the production memory code (:func:`mirage.memory.create_memory`, ``read``); only the scoring is
here. ``mirage bench fidelity`` (``mirage_cli/fidelity.py``) is its command.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as Fnn

from mirage._check import check_shape
from mirage.errors import InputError
from mirage.latent_space import LatentSpace
from mirage.memory import (
    FootprintDepth,
    MemoryConfig,
    MemoryKind,
    SplatMode,
    create_memory,
    encode_phases,
    phase_offsets,
)

logger = logging.getLogger("mirage")

FIDELITY_SCHEMA_VERSION = 1
SOURCE_IMAGE = "source.png"
SOURCE_DEPTH = "source_depth.png"
CAMERAS = "cameras.json"
TARGETS_DIR = "targets"
RGB_METHOD = "rgb"
CEILING_METHOD = "vae-ceiling"
SSIM_WINDOW = 11  # Gaussian window side (Wang et al. 2004)
SSIM_SIGMA = 1.5  # Gaussian window sigma in pixels


# --------------------------------------------------------------------------------------------------------------
# metrics


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the masked pixels (data range 1: images mapped from [-1, 1] to [0, 1]).

    Args:
        pred, target: (3, H, W) float in [-1, 1].
        mask: (H, W) bool, pixels to score (default all).
    Returns:
        PSNR in dB (inf for identical pixels, NaN for an empty mask).
    """
    check_shape(pred, (3, "H", "W"), "pred")
    check_shape(target, tuple(pred.shape), "target")
    m = torch.ones(pred.shape[1:], dtype=torch.bool, device=pred.device) if mask is None else mask.to(pred.device)
    check_shape(m, tuple(pred.shape[1:]), "mask")
    n = int(m.sum())
    if n == 0:
        return float("nan")
    diff = ((pred.float() - target.float().to(pred.device)) / 2.0)[:, m]  # (3, n) in [0, 1] units
    mse = float(diff.square().mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(size, size) normalised 2D Gaussian (outer product of the 1D one), sums to 1."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
    per channel, averaged over channels; the 'valid' windows only (no padding).

    Args:
        pred, target: (3, H, W) float in [-1, 1] (mapped to [0, 1]), H, W >= 11.
    Returns:
        (H - 10, W - 10) float32; entry (y, x) is the SSIM of the window centred on pixel (y + 5, x + 5).
    """
    check_shape(pred, (3, "H", "W"), "pred")
    check_shape(target, tuple(pred.shape), "target")
    if min(pred.shape[1:]) < SSIM_WINDOW:
        raise InputError(f"ssim: image {pred.shape[2]}x{pred.shape[1]} is smaller than the {SSIM_WINDOW}px window")
    a = (pred.float()[None] + 1) / 2  # (1, 3, H, W) in [0, 1]
    b = (target.float().to(pred.device)[None] + 1) / 2
    win = gaussian_window(device=a.device)[None, None].expand(3, 1, -1, -1)  # (3, 1, 11, 11)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return Fnn.conv2d(x, win, groups=3)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s[0].mean(0)  # (H - 10, W - 10)


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean SSIM (:func:`ssim_map`) over the windows that lie entirely inside ``mask`` (H, W) bool (default: all
    valid windows). NaN when no window fits in the mask."""
    m = ssim_map(pred, target)
    if mask is None:
        return float(m.mean())
    check_shape(mask, tuple(pred.shape[1:]), "mask")
    inside = -Fnn.max_pool2d(-(mask.to(m.device).float()[None, None]), SSIM_WINDOW, stride=1)[0, 0] > 0.5  # (H-10, W-10)
    n = int(inside.sum())
    return float(m[inside].mean()) if n else float("nan")


# --------------------------------------------------------------------------------------------------------------
# scenes


@dataclass(frozen=True)
class FidelityScene:
    """A source view with depth, and target views with cameras and real images.

    Attributes:
        source: (3, H, W) float32 in [-1, 1].
        source_depth: (H, W) float32 z-depth in metres, NaN where invalid.
        K: (N, 3, 3) float64 pixel intrinsics; w2c: (N, 4, 4) float64 OpenCV world-to-camera. Frame 0 is the source.
        targets: (N - 1, 3, H, W) float32 in [-1, 1], the real images of frames 1..N-1.
        names: N - 1 target names (file stems).
        where: the folder it came from, for messages.
    """

    source: torch.Tensor
    source_depth: torch.Tensor
    K: torch.Tensor
    w2c: torch.Tensor
    targets: torch.Tensor
    names: tuple[str, ...]
    where: str = "<in-memory>"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.source.shape[2]), int(self.source.shape[1])


def load_scene(folder: str | Path) -> FidelityScene:
    """Read a scene folder (``docs/fidelity.md``): ``source.png``, ``source_depth.png`` (16-bit mm) or
    ``source_depth.npy`` (metres), ``targets/*.png|jpg`` (sorted by name), ``cameras.json`` (any trajectory file
    :func:`mirage.trajectory.load_trajectory` reads; frame 0 = source, frames 1.. = the targets in name order).

    Raises:
        InputError: a missing or unreadable part, counts or sizes that disagree (one line naming the file).
    """
    from mirage.depth import read_depth_file
    from mirage.trajectory import load_trajectory
    from mirage.video import IMAGE_SUFFIXES, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"fidelity scene {folder}: not a folder; pass a folder with {SOURCE_IMAGE}, {SOURCE_DEPTH}, "
                         f"{TARGETS_DIR}/ and {CAMERAS} (see docs/fidelity.md)")
    src_path = folder / SOURCE_IMAGE
    if not src_path.is_file():
        raise InputError(f"fidelity scene {folder}: {SOURCE_IMAGE} is missing; add the source image")
    depth_path = next((p for p in (folder / SOURCE_DEPTH, folder / "source_depth.npy") if p.is_file()), None)
    if depth_path is None:
        raise InputError(f"fidelity scene {folder}: {SOURCE_DEPTH} (16-bit mm) or source_depth.npy (metres) is missing")
    tdir = folder / TARGETS_DIR
    target_paths = sorted(p for p in tdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if tdir.is_dir() else []
    if not target_paths:
        raise InputError(f"fidelity scene {folder}: no target images in {TARGETS_DIR}/; add the real target views")
    cam_path = folder / CAMERAS
    if not cam_path.is_file():
        raise InputError(f"fidelity scene {folder}: {CAMERAS} is missing; add the cameras (frame 0 = source)")
    source = read_image(src_path)
    H, W = source.shape[1:]
    if H % 8 or W % 8:
        raise InputError(f"fidelity scene {src_path}: size {W}x{H} is not a multiple of 8; crop the scene's images")
    dres = read_depth_file(depth_path, W, H)
    depth = torch.where(dres.valid, dres.depth, float("nan"))
    targets = []
    for p in target_paths:
        t = read_image(p)
        if tuple(t.shape) != tuple(source.shape):
            raise InputError(f"fidelity scene {p}: size {t.shape[2]}x{t.shape[1]} differs from the source's {W}x{H}; "
                             "give every view the source's size")
        targets.append(t)
    traj = load_trajectory(cam_path, width=W, height=H)
    if traj.num_frames != len(targets) + 1:
        raise InputError(f"fidelity scene {cam_path}: {traj.num_frames} cameras for 1 source + {len(targets)} targets; "
                         "give one camera per view (frame 0 = source, then targets in name order)")
    return FidelityScene(source=source, source_depth=depth, K=traj.K, w2c=traj.w2c, targets=torch.stack(targets),
                         names=tuple(p.stem for p in target_paths), where=str(folder))


def write_scene(folder: str | Path, scene: FidelityScene) -> None:
    """Write ``scene`` in the folder format :func:`load_scene` reads (PNG images, 16-bit mm depth, mirage trajectory
    JSON). Every file is written atomically."""
    from mirage.depth import save_depth_png16
    from mirage.trajectory import Trajectory
    from mirage.video import write_png

    folder = Path(folder)
    (folder / TARGETS_DIR).mkdir(parents=True, exist_ok=True)
    write_png(folder / SOURCE_IMAGE, scene.source)
    save_depth_png16(folder / SOURCE_DEPTH, scene.source_depth)
    for name, img in zip(scene.names, scene.targets, strict=True):
        write_png(folder / TARGETS_DIR / f"{name}.png", img)
    W, H = scene.size
    Trajectory(K=scene.K.double(), w2c=scene.w2c.double(), width=W, height=H, fps=1.0,
               source="fidelity scene").save_json(folder / CAMERAS)


def synthetic_targets(width: int, height: int, fov_x_deg: float = 60.0) -> dict[str, torch.Tensor]:
    """Target cameras (name -> (4, 4) float64 w2c) around a source camera at the origin, for
    :func:`make_synthetic_scene`: the identity, a half-latent-cell shift at 5 m (sub-stride), a 0.25 m truck, a
    0.6 m push-in and a 0.2 m pedestal with a small push. Names sort in this order."""
    from mirage.camera import intrinsics_from_fov, make_rigid

    fx = float(intrinsics_from_fov(fov_x_deg, width, height)[0, 0])

    def at(x: float, y: float, z: float) -> torch.Tensor:  # camera centre (x, y, z), no rotation
        return make_rigid(torch.eye(3, dtype=torch.float64), -torch.tensor([x, y, z], dtype=torch.float64))

    return {
        "01_identity": torch.eye(4, dtype=torch.float64),
        "02_shift_half_cell": at(0.5 * 8 * 5.0 / fx, 0.0, 0.0),
        "03_truck_right": at(0.25, 0.0, 0.0),
        "04_push_in": at(0.0, 0.0, 0.6),
        "05_pedestal_up": at(0.0, -0.2, 0.1),
    }


def make_synthetic_scene(width: int, height: int, *, fov_x_deg: float = 60.0, supersample: int = 3) -> FidelityScene:
    """The analytic room of :func:`mirage.synthetic.example_room` seen from the origin (source) and from
    :func:`synthetic_targets`: exact source depth and exact target images. ``width``, ``height``: multiples of 8."""
    from mirage.camera import intrinsics_from_fov
    from mirage.synthetic import example_room, render_scene

    room = example_room()
    K = intrinsics_from_fov(fov_x_deg, width, height)  # (3, 3) float64
    source, depth = render_scene(room, K, torch.eye(4, dtype=torch.float64), width, height, supersample=supersample)
    poses = synthetic_targets(width, height, fov_x_deg)
    targets = torch.stack([render_scene(room, K, w2c, width, height, supersample=supersample)[0] for w2c in poses.values()])
    n = len(poses) + 1
    w2c = torch.stack([torch.eye(4, dtype=torch.float64), *poses.values()])
    depth = torch.where(torch.isfinite(depth), depth, float("nan"))
    return FidelityScene(source=source, source_depth=depth, K=K[None].expand(n, 3, 3).clone(), w2c=w2c,
                         targets=targets, names=tuple(poses), where=f"synthetic room {width}x{height}")


# --------------------------------------------------------------------------------------------------------------
# polyphase encoding


# --------------------------------------------------------------------------------------------------------------
# the benchmark


@dataclass(frozen=True)
class LatentVariant:
    """One latent-memory setting to score: a name (table column) and its memory config."""

    name: str
    config: MemoryConfig


def default_variants() -> tuple[LatentVariant, ...]:
    """The latent variants ``mirage bench fidelity`` scores by default (see docs/fidelity.md for the numbers)."""
    return (
        LatentVariant("latent-nearest", MemoryConfig(splat=SplatMode.NEAREST)),
        LatentVariant("latent-bilinear", MemoryConfig()),
        LatentVariant("latent-closest", MemoryConfig(splat=SplatMode.CLOSEST)),
        LatentVariant("latent-poly2", MemoryConfig(splat=SplatMode.CLOSEST, phases=2)),
        LatentVariant("latent-poly4", MemoryConfig(splat=SplatMode.CLOSEST, phases=4)),
        LatentVariant("latent-poly2-tent", MemoryConfig(splat=SplatMode.TENT, phases=2)),
        LatentVariant("latent-poly4-tent", MemoryConfig(splat=SplatMode.TENT, phases=4)),
    )


def extra_variants() -> tuple[LatentVariant, ...]:
    """Further ideas measured once (docs/fidelity.md): polyphase with a bilinear blend, nearest-pixel footprint."""
    return (
        LatentVariant("latent-poly4-bilinear", MemoryConfig(splat=SplatMode.BILINEAR, phases=4)),
        LatentVariant("latent-poly4-min", MemoryConfig(splat=SplatMode.CLOSEST, phases=4,
                                                       footprint_depth=FootprintDepth.MIN)),
    )


VARIANT_NAMES = ("nearest", "bilinear", "closest", "poly2", "poly4", "poly2-tent", "poly4-tent", "poly4-bilinear",
                 "poly4-min")


def variants_by_name(names: list[str] | tuple[str, ...]) -> tuple[LatentVariant, ...]:
    """Variants by short name (``VARIANT_NAMES``, with or without the ``latent-`` prefix); unknown -> InputError."""
    table = {v.name.removeprefix("latent-"): v for v in (*default_variants(), *extra_variants())}
    out = []
    for n in names:
        key = n.removeprefix("latent-")
        if key not in table:
            raise InputError(f"--variant: {n!r} is not one of {', '.join(VARIANT_NAMES)}")
        out.append(table[key])
    return tuple(out)


@dataclass(frozen=True)
class Score:
    """PSNR (dB) and SSIM of one method on one target over the common covered mask."""

    psnr: float
    ssim: float


@dataclass(frozen=True)
class TargetResult:
    """Scores of every method on one target view.

    Attributes:
        name: the target's name.
        covered: fraction of the target's pixels in the common covered mask (covered by every memory).
        scores: method name -> :class:`Score` (``rgb``, each latent variant, ``vae-ceiling``).
    """

    name: str
    covered: float
    scores: dict[str, Score]


@dataclass
class FidelityReport:
    """What ``mirage bench fidelity`` prints and writes as JSON.

    Attributes:
        header: vae, size, device, scene, variants' configs, metric definitions.
        methods: the columns in order (``rgb``, latent variants, ``vae-ceiling``).
        bytes: method -> memory size in bytes after init (the ceiling has none).
        tokens: method -> tokens/points stored.
        targets: per target :class:`TargetResult`.
        mean: method -> mean :class:`Score` over the targets (NaN entries skipped).
    """

    header: dict[str, Any]
    methods: tuple[str, ...]
    bytes: dict[str, int]
    tokens: dict[str, int]
    targets: list[TargetResult]
    mean: dict[str, Score] = field(default_factory=dict)
    schema_version: int = FIDELITY_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        def sc(s: Score) -> dict[str, float | None]:
            return {"psnr": _num(s.psnr), "ssim": _num(s.ssim)}

        return {
            "schema_version": self.schema_version,
            "header": self.header,
            "methods": list(self.methods),
            "bytes": self.bytes,
            "tokens": self.tokens,
            "targets": [{"name": t.name, "covered": t.covered, "scores": {k: sc(v) for k, v in t.scores.items()}}
                        for t in self.targets],
            "mean": {k: sc(v) for k, v in self.mean.items()},
        }

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` atomically."""
        from mirage.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))


def _num(x: float) -> float | None:
    return None if math.isnan(x) else (1e9 if math.isinf(x) else float(x))


def run_fidelity(
    scene: FidelityScene,
    vae: Any,
    *,
    variants: tuple[LatentVariant, ...] | None = None,
    rgb: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> FidelityReport:
    """Score the memories of ``scene`` against its real target images.

    Steps: encode the source (and its shifted copies for polyphase variants); build the RGB memory (unless
    ``rgb=False``) and one latent memory per variant with :func:`mirage.memory.create_memory`; read each at every
    target camera (one batched read per memory); decode the reads with ``vae``; round-trip each target through the
    VAE (the ceiling); score all of them over the pixels covered by every memory (:func:`psnr` on those pixels,
    :func:`ssim` on the windows entirely inside them). A latent cell's pixels are covered when the cell is not a
    hole; the RGB memory's when the pixel is rendered and its latent cell is not a hole.

    Args:
        scene: :class:`FidelityScene`.
        vae: a :class:`mirage.vae.VAE` (per-frame image VAE such as TAESD; ``encode_images``/``decode_images``).
        variants: latent variants (default :func:`default_variants`).
        rgb: also score the RGB memory.
        progress: called as (stage, done, total) after each memory.
    Returns:
        :class:`FidelityReport`.
    """
    variants = default_variants() if variants is None else tuple(variants)
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or RGB_METHOD in names or CEILING_METHOD in names:
        raise InputError(f"variants: names {names} must be unique and not {RGB_METHOD!r} / {CEILING_METHOD!r}")
    if not variants and not rgb:
        raise InputError("fidelity: nothing to score; pass at least one latent variant or keep the rgb memory")
    dev, stride = vae.device, int(vae.spatial_stride)
    W, H = scene.size
    if H % stride or W % stride:
        raise InputError(f"fidelity scene {scene.where}: size {W}x{H} is not a multiple of the VAE stride {stride}")
    n_t = scene.targets.shape[0]
    K_t = scene.K[1:].float().to(dev)  # (T, 3, 3)
    w2c_t = scene.w2c[1:].float().to(dev)  # (T, 4, 4)
    c2w0 = torch.linalg.inv(scene.w2c[0].double()).float().to(dev)
    src = scene.source.to(dev)
    depth = scene.source_depth.to(dev)
    max_phases = max((v.config.phases for v in variants), default=1)
    phase_lat = encode_phases(vae, src, max_phases)  # all offsets of the largest phase count
    latents0 = phase_lat[(0, 0)]  # (C, h, w)
    common = dict(image=src, latents=latents0, depth=depth, K=scene.K[0].float().to(dev), c2w=c2w0,
                  space=LatentSpace(int(latents0.shape[0]), stride, 1, str(getattr(vae, "source", ""))))
    decoded: dict[str, torch.Tensor] = {}  # method -> (T, 3, H, W)
    covered: dict[str, torch.Tensor] = {}  # method -> (T, H, W) bool
    nbytes: dict[str, int] = {}
    ntok: dict[str, int] = {}
    total = len(variants) + int(rgb) + 1
    done = 0
    if rgb:
        mem = create_memory(MemoryKind.RGB, config=MemoryConfig(), encode_video=vae.encode_images, **common)
        r = mem.read(K_t, w2c_t)
        decoded[RGB_METHOD] = vae.decode_images(r.latents)
        covered[RGB_METHOD] = ~r.pixel_holes & ~_cells_to_pixels(r.holes, stride)
        st = mem.stats()
        nbytes[RGB_METHOD], ntok[RGB_METHOD] = st.bytes, st.tokens
        done += 1
        if progress:
            progress(RGB_METHOD, done, total)
    for v in variants:
        p = v.config.phases
        sub = None
        if p > 1:
            sub = {o: phase_lat[o] for o in phase_offsets(stride, p)}
        mem = create_memory(MemoryKind.LATENT, config=v.config, phase_latents=sub, **common)
        r = mem.read(K_t, w2c_t)
        decoded[v.name] = vae.decode_images(r.latents)
        covered[v.name] = ~_cells_to_pixels(r.holes, stride)
        st = mem.stats()
        nbytes[v.name], ntok[v.name] = st.bytes, st.tokens
        done += 1
        if progress:
            progress(v.name, done, total)
    targets = scene.targets.to(dev)
    decoded[CEILING_METHOD] = vae.decode_images(vae.encode_images(targets))
    done += 1
    if progress:
        progress(CEILING_METHOD, done, total)
    methods = tuple([RGB_METHOD] if rgb else []) + tuple(names) + (CEILING_METHOD,)
    mask = torch.stack(list(covered.values())).all(0)  # (T, H, W): covered by every memory
    results = []
    for t in range(n_t):
        scores = {m: Score(psnr(decoded[m][t].float(), targets[t], mask[t]), ssim(decoded[m][t].float(), targets[t], mask[t]))
                  for m in methods}
        results.append(TargetResult(scene.names[t], float(mask[t].float().mean()), scores))
        if float(mask[t].float().mean()) == 0.0:
            logger.warning("fidelity: target %s has no pixel covered by every memory; its scores are NaN", scene.names[t])
    mean = {m: Score(_nanmean([r.scores[m].psnr for r in results]), _nanmean([r.scores[m].ssim for r in results]))
            for m in methods}
    header = {
        "vae": str(getattr(vae, "source", "")),
        "latent_channels": int(latents0.shape[0]),
        "stride": stride,
        "size": [W, H],
        "device": str(dev),
        "scene": scene.where,
        "targets": n_t,
        "variants": {v.name: v.config.to_dict() for v in variants},
        "mask": "pixels covered by every memory (latent cell not a hole; rgb: pixel rendered and cell not a hole)",
        "psnr": "dB, data range 1 ([-1, 1] mapped to [0, 1]), over the mask",
        "ssim": f"Gaussian {SSIM_WINDOW}x{SSIM_WINDOW} sigma {SSIM_SIGMA}, K1 0.01 K2 0.03, windows inside the mask",
    }
    return FidelityReport(header=header, methods=methods, bytes=nbytes, tokens=ntok, targets=results, mean=mean)


def run_fidelity_folder(
    folder: str | Path | FidelityScene,
    vae_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    variants: tuple[LatentVariant, ...] | None = None,
    rgb: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> FidelityReport:
    """:func:`load_scene` + load the VAE (:func:`mirage.hub.load_vae`, float32) + :func:`run_fidelity`.
    The scene is validated before the VAE loads. ``folder`` may be a ready :class:`FidelityScene` (e.g.
    :func:`mirage.fidelity_stereo.make_stereo_scene`)."""
    from mirage.hub import load_vae

    scene = folder if isinstance(folder, FidelityScene) else load_scene(folder)
    vae = load_vae(vae_path, device=device, dtype=torch.float32)
    if vae.temporal_stride != 1:
        raise InputError(f"--vae {vae_path}: a video VAE (temporal stride {vae.temporal_stride}); the fidelity bench "
                         "scores single images: pass an image VAE such as taesd (the default, embedded) or taesd3")
    return run_fidelity(scene, vae, variants=variants, rgb=rgb, progress=progress)


def _cells_to_pixels(cells: torch.Tensor, stride: int) -> torch.Tensor:
    """(T, h, w) bool -> (T, h * stride, w * stride), each cell repeated over its pixels."""
    return cells.repeat_interleave(stride, 1).repeat_interleave(stride, 2)


def _nanmean(xs: list[float]) -> float:
    ok = [x for x in xs if not math.isnan(x)]
    return sum(ok) / len(ok) if ok else float("nan")
