"""The bad-input battery: hostile and careless inputs, one line per case, through the real CLI error boundary.

Each case is (id, command line, environment, expected exit code, fragment the one error line must contain). Every
case must end with that exit code, exactly one ``error:`` line (no traceback, no "internal error"), and the
working folder exactly as it was: no file left behind, none changed, none removed (inputs included).

Placeholders in the command line name files the fixture writes: IMG (a good 64x48 PNG), OUT (a folder that must
stay absent), and one name per hostile file below. Runs in process with the tiny preset on the CPU: almost every
case fails before any model loads; the few that need the models (memory files, pixels that only decode badly,
model folders, a path that sees nothing) load the tiny preset in well under a second.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import run_main  # tests/_cli.py
from PIL import Image

W, H = 64, 48
RENDER = ["render", "IMG", "--preset", "tiny", "--device", "cpu", "--denoiser", "none", "-q"]
TINY = [*RENDER, "--traj", "orbit", "--size", f"{W}x{H}", "--frames", "5"]  # a valid tiny render without -o
OK = [*TINY, "-o", "OUT/v.mp4"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): what a decompression bomb shows first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _yaml_alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" value (9**9 strings once expanded) where a string is expected: the error must stay short."""
    lines = ['  - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "name:\n" + "\n".join(lines) + "\nsegments: [{kind: orbit}]\n"


def _yaml_many_aliases(n: int = 1500) -> str:
    return "name: &n x\ndescription: [" + ", ".join(["*n"] * n) + "]\nsegments: [{kind: orbit}]\n"


def _yaml_merge_bomb(levels: int = 30) -> str:
    """Each mapping merges the one nested in it twice: 2**levels entries once expanded, from 1 kB of YAML."""
    node = "&a0 {k0: 1, j0: 2}"
    for k in range(1, levels):
        node = f"&a{k} {{<<: [{node}, *a{k - 1}], x{k}: 1}}"
    return f"bomb: {node}\nsegments: [{{kind: orbit}}]\n"


def _mirage_traj(width: int, height: int) -> dict:
    eye = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
    moved = [[1.0, 0, 0, -0.05], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
    K = [[50.0, 0, (width - 1) / 2], [0, 50.0, (height - 1) / 2], [0, 0, 1.0]]
    return {"format": "mirage-trajectory", "version": 1, "width": width, "height": height, "fps": 16.0,
            "frames": [{"K": K, "w2c": eye}, {"K": K, "w2c": moved}]}


def _memory_file(path: Path, *, finite: bool = True, header: dict | None = None) -> Path:
    from mirage.memory.files import save_store
    from mirage.memory.store import PointStore

    feats = torch.zeros(4, 16)
    if not finite:
        feats[1, 3] = float("nan")
    store = PointStore(torch.rand(4, 3) + torch.tensor([0, 0, 1.0]), feats, torch.zeros(4, dtype=torch.int64))
    save_store(path, store, header if header is not None else {"kind": "latent"})
    return path


def _write_files(d: Path) -> dict[str, Path]:
    """Every hostile input, written into ``d``. Returns placeholder -> path."""
    rng = np.random.default_rng(0)
    f: dict[str, Path] = {}

    def put(name: str, data: bytes | str) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
        return p

    img = d / "img.png"
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(img)
    f["IMG"] = img
    f["IMG2"] = d / "two" / "img.png"  # same stem as IMG: a batch could not name both outputs
    f["IMG2"].parent.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(f["IMG2"])
    # images
    f["EMPTY_PNG"] = put("empty.png", b"")
    f["TEXT_PNG"] = put("notes.png", "this is not an image\n")
    f["TRUNC_PNG"] = put("trunc.png", img.read_bytes()[:120])
    f["BOMB_PNG"] = put("bomb.png", _png_header(100_000, 100_000))
    f["THIN_PNG"] = d / "thin.png"
    Image.fromarray(np.zeros((4, 400, 3), np.uint8)).save(f["THIN_PNG"])
    f["HDR_TIF"] = d / "hdr.tif"
    Image.fromarray((rng.random((H, W)) * 40).astype(np.float32), mode="F").save(f["HDR_TIF"])
    f["NAN_TIF"] = d / "nan.tif"
    Image.fromarray(np.full((H, W), np.nan, np.float32), mode="F").save(f["NAN_TIF"])
    f["NOIMG_DIR"] = d / "noimages"
    put("noimages/readme.txt", "no pictures here\n")
    f["FIFO"] = d / "pipe.png"
    os.mkfifo(f["FIFO"])
    f["FIFO_TXT"] = d / "cams_pipe.txt"
    os.mkfifo(f["FIFO_TXT"])
    # depth
    f["DEPTH_NAN"] = d / "nan.npy"
    np.save(f["DEPTH_NAN"], np.full((H, W), np.nan, np.float32))
    f["DEPTH_INT"] = d / "int.npy"
    np.save(f["DEPTH_INT"], np.ones((H, W), np.int32))
    f["DEPTH_3D"] = d / "rgb.npy"
    np.save(f["DEPTH_3D"], np.ones((3, H, W), np.float32))
    f["DEPTH_ASPECT"] = d / "square.npy"
    np.save(f["DEPTH_ASPECT"], np.ones((48, 48), np.float32))
    f["DEPTH_TXT"] = put("depth.txt", "1 2 3\n")
    f["DEPTH_PICKLE"] = d / "pickle.npy"
    np.save(f["DEPTH_PICKLE"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    f["DEPTH_BOMB"] = put("depth_bomb.png", _png_header(100_000, 75_000))
    f["DEPTH_8BIT"] = d / "depth8.png"
    Image.fromarray(np.full((H, W), 100, np.uint8)).save(f["DEPTH_8BIT"])
    # trajectories
    f["ALIAS_BOMB"] = put("bomb.yaml", _yaml_alias_bomb())
    f["MERGE_BOMB"] = put("merge.yaml", _yaml_merge_bomb())
    f["MANY_ALIASES"] = put("aliases.yaml", _yaml_many_aliases())
    f["YAML_FRAMES"] = put("long.yaml", "frames: 1000000000\nsegments: [{kind: orbit}]\n")
    f["YAML_TYPO"] = put("typo.yaml", "fram: 10\nsegments: [{kind: orbit}]\n")
    f["YAML_KIND"] = put("kind.yaml", "segments: [{kind: teleport}]\n")
    f["DEEP_JSON"] = put("deep.json", "[" * 100_000 + "]" * 100_000)
    f["BIGINT_JSON"] = put("bigint.json", '{"frames": [' + "9" * 5000 + "]}")
    f["RE10K_NAN"] = put("nan.txt", "https://x\n" + "0 0.5 0.9 0.5 0.5 0 0 1 0 0 nan 0 1 0 0 0 0 1 0\n")
    f["MIRAGE_SQUARE"] = put("square.json", json.dumps(_mirage_traj(64, 64)))
    f["IMG_TRAJ"] = put("traj_target.json", json.dumps(_mirage_traj(64, 48)))  # reached through a symlink
    f["LINK_TRAJ"] = d / "traj_link.json"
    f["LINK_TRAJ"].symlink_to(f["IMG_TRAJ"])
    f["COLMAP"] = d / "colmap"
    put("colmap/sparse/0/cameras.txt", "1 PINHOLE 64 48 50 50 31.5 23.5\n")
    put("colmap/sparse/0/images.txt", "1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0.1 0 0 1 b.png\n\n")
    f["COLMAP_CAMS"] = f["COLMAP"] / "sparse" / "0" / "cameras.txt"
    f["BIG_TXT"] = put("big.txt", "https://x\n" + "0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n" * 20)
    # outputs that must not be clobbered
    f["PHOTOS"] = d / "photos"
    f["PHOTOS"].mkdir()
    for i in range(3):  # numbered like mirage's frames, but the user's
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(f["PHOTOS"] / f"{i:05d}.png")
    f["A_FILE"] = put("afile.txt", "a user's file\n")
    f["LINK_TO_IMG"] = d / "link.json"
    f["LINK_TO_IMG"].symlink_to(img)
    # memory files
    f["MEM_CORRUPT"] = put("bad.memory.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    f["MEM_NAN"] = _memory_file(d / "nan.memory.safetensors", finite=False)
    f["MEM_GOOD"] = _memory_file(d / "good.memory.safetensors")
    from safetensors.torch import save_file

    f["MEM_FOREIGN"] = d / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(f["MEM_FOREIGN"]))
    f["MEM_VERSION"] = d / "v9.memory.safetensors"
    save_file({"xyz": torch.zeros(1, 3), "features": torch.zeros(1, 4), "birth": torch.zeros(1, dtype=torch.int64)},
              str(f["MEM_VERSION"]), metadata={"mirage": json.dumps({"format": "mirage-memory", "version": 9})})
    # model folders
    f["MODEL_EMPTY"] = d / "model_empty"
    f["MODEL_EMPTY"].mkdir()
    f["MODEL_PICKLE"] = d / "model_pickle"
    put("model_pickle/config.json", json.dumps({"_class_name": "AutoencoderKLWan"}))
    put("model_pickle/diffusion_pytorch_model.bin", b"\x80\x04K\x01.")
    f["MODEL_NOWEIGHTS"] = d / "model_noweights"
    put("model_noweights/config.json", json.dumps({"_class_name": "AutoencoderKLWan"}))
    f["MODEL_REMOTE"] = d / "model_remote"
    put("model_remote/config.json", json.dumps({"_class_name": "EvilModel", "auto_map": {"AutoModel": "evil.Evil"}}))
    put("model_remote/diffusion_pytorch_model.safetensors", b"")
    f["MODEL_BADJSON"] = d / "model_badjson"
    put("model_badjson/config.json", "{not json")
    put("model_badjson/diffusion_pytorch_model.safetensors", b"")
    return f


# (id, command line, environment, exit code, fragment of the one error line)
CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    # --- images
    ("image_missing", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "nowhere.png"}, 2, "no such file or folder"),
    ("image_empty_file", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "EMPTY_PNG"}, 2, "cannot be read"),
    ("image_is_text", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "TEXT_PNG"}, 2, "notes.png"),
    ("image_truncated", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "TRUNC_PNG"}, 2, "trunc.png"),
    ("image_decompression_bomb", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "BOMB_PNG"}, 2, "MIRAGE_MAX_IMAGE_PIXELS"),
    ("image_degenerate_aspect", [*RENDER, "--traj", "orbit", "-o", "OUT/v.mp4"], {"IMG": "THIN_PNG"}, 2,
     "wider than 8:1"),
    ("image_float_hdr", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "HDR_TIF"}, 2, "not [0, 1]"),
    ("image_float_nan", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "NAN_TIF"}, 2, "NaN or inf"),
    ("image_folder_without_images", [*TINY, "--out-dir", "OUT"], {"IMG": "NOIMG_DIR"}, 2, "holds no image"),
    ("image_is_a_pipe", [*TINY, "-o", "OUT/v.mp4"], {"IMG": "FIFO"}, 2, "not a regular file"),
    ("image_names_clash_in_batch", [*TINY, "IMG2", "--out-dir", "OUT"], {}, 2, "share the name"),
    ("image_over_pixel_limit", OK, {"env:MIRAGE_MAX_IMAGE_PIXELS": "1000"}, 2, "limit of 1000"),
    # --- depth
    ("depth_all_nan", [*OK, "--depth", "DEPTH_NAN"], {}, 2, "nan.npy"),
    ("depth_missing", [*OK, "--depth", "nowhere.npy"], {}, 2, "nowhere.npy"),
    ("depth_integer_npy", [*OK, "--depth", "DEPTH_INT"], {}, 2, "expected float metres"),
    ("depth_three_channels", [*OK, "--depth", "DEPTH_3D"], {}, 2, "expected (H, W)"),
    ("depth_other_aspect", [*OK, "--depth", "DEPTH_ASPECT"], {}, 2, "another aspect ratio"),
    ("depth_unknown_extension", [*OK, "--depth", "DEPTH_TXT"], {}, 2, "unknown extension"),
    ("depth_pickle_npy", [*OK, "--depth", "DEPTH_PICKLE"], {}, 2, "pickle.npy"),
    ("depth_8bit_png", [*OK, "--depth", "DEPTH_8BIT"], {}, 2, "depth8.png"),
    ("depth_png_bomb", [*OK, "--depth", "DEPTH_BOMB"], {}, 2, "depth_bomb.png"),
    ("depth_with_a_batch", [*TINY, "IMG2", "--depth", "DEPTH_NAN", "--out-dir", "OUT"], {"IMG2": "TEXT_PNG"}, 2,
     "apply to one image"),
    # --- trajectories
    ("traj_unknown_preset", [*RENDER, "--traj", "orbitt", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "no preset of that name"),
    ("traj_yaml_alias_bomb", [*RENDER, "--traj", "ALIAS_BOMB", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "name: expected a string, got [['lol'"),
    ("traj_yaml_too_many_aliases", [*RENDER, "--traj", "MANY_ALIASES", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "more than 1000 aliases"),
    ("traj_yaml_merge_bomb", [*RENDER, "--traj", "MERGE_BOMB", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "expands to more than"),
    ("traj_yaml_billion_frames", [*RENDER, "--traj", "YAML_FRAMES", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "MIRAGE_MAX_FRAMES"),
    ("traj_yaml_unknown_key", [*RENDER, "--traj", "YAML_TYPO", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "unknown key 'fram'"),
    ("traj_yaml_unknown_kind", [*RENDER, "--traj", "YAML_KIND", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "unknown kind 'teleport'"),
    ("traj_camera_file_is_a_pipe", [*RENDER, "--traj", "FIFO_TXT", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "not a regular file"),
    ("traj_camera_file_is_a_device", [*RENDER, "--traj", "/dev/zero", "--format", "realestate10k", "--size", "64x48",
                                      "-o", "OUT/v.mp4"], {}, 2, "not a regular file"),
    ("traj_camera_file_over_size_limit", [*RENDER, "--traj", "BIG_TXT", "--size", "64x48", "-o", "OUT/v.mp4"],
     {"env:MIRAGE_MAX_FILE_BYTES": "100"}, 2, "MIRAGE_MAX_FILE_BYTES"),
    ("traj_json_nested_too_deep", [*RENDER, "--traj", "DEEP_JSON", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "nested too deeply"),
    ("traj_json_huge_integer", [*RENDER, "--traj", "BIGINT_JSON", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "bigint.json"),
    ("traj_re10k_nan", [*RENDER, "--traj", "RE10K_NAN", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2, "nan.txt"),
    ("traj_other_aspect", [*RENDER, "--traj", "MIRAGE_SQUARE", "--size", "64x48", "-o", "OUT/v.mp4"], {}, 2,
     "aspect"),
    ("traj_sees_nothing", [*TINY, "--traj-scale", "1e6", "-o", "OUT/v.mp4"], {}, 2, "see none of the input image"),
    ("traj_start_with_preset", [*TINY, "--start", "a.png", "-o", "OUT/v.mp4"], {}, 2, "--start"),
    ("traj_unknown_format", [*TINY, "--format", "nope", "-o", "OUT/v.mp4"], {}, 2, "nope"),
    # --- options
    ("frames_one", [*RENDER, "--traj", "orbit", "--size", "64x48", "--frames", "1", "-o", "OUT/v.mp4"], {}, 2,
     "--frames"),
    ("frames_billion", [*RENDER, "--traj", "orbit", "--size", "64x48", "--frames", "1000000000", "-o", "OUT/v.mp4"],
     {}, 2, "MIRAGE_MAX_FRAMES"),
    ("frames_do_not_fit_in_memory", [*RENDER, "--traj", "orbit", "--size", "4096x4096", "--frames", "9000", "-o",
                                     "OUT/v.mp4"], {}, 2, "GiB of host memory"),
    ("fps_zero", [*OK, "--fps", "0"], {}, 2, "outside [1, 240]"),
    ("fps_huge", [*OK, "--fps", "1e9"], {}, 2, "outside [1, 240]"),
    ("fps_nan", [*OK, "--fps", "nan"], {}, 2, "--fps"),
    ("traj_scale_negative", [*OK, "--traj-scale", "-1"], {}, 2, "--traj-scale"),
    ("traj_scale_inf", [*OK, "--traj-scale", "inf"], {}, 2, "--traj-scale"),
    ("steps_zero", [*OK, "--steps", "0"], {}, 2, "--steps"),
    ("steps_ten_million", [*OK, "--steps", "10000000"], {}, 2, "MIRAGE_MAX_STEPS"),
    ("seed_negative", [*OK, "--seed", "-1"], {}, 2, "--seed"),
    ("seed_over_64_bits", [*OK, "--seed", str(2**64)], {}, 2, "--seed"),
    ("size_too_many_pixels", [*RENDER, "--traj", "orbit", "--size", "100000x100000", "-o", "OUT/v.mp4"], {}, 2,
     "MIRAGE_MAX_OUTPUT_PIXELS"),
    ("size_degenerate_aspect", [*RENDER, "--traj", "orbit", "--size", "2048x16", "-o", "OUT/v.mp4"], {}, 2,
     "aspect ratio"),
    ("size_not_multiple_of_16", [*RENDER, "--traj", "orbit", "--size", "65x48", "-o", "OUT/v.mp4"], {}, 2,
     "multiples of 16"),
    ("size_not_a_size", [*RENDER, "--traj", "orbit", "--size", "wide", "-o", "OUT/v.mp4"], {}, 2, "'wide'"),
    ("chunk_frames_not_4k_plus_1", [*OK, "--chunk-frames", "6"], {}, 2, "4k + 1"),
    ("guidance_below_one", [*OK, "--guidance", "0.5"], {}, 2, "--guidance"),
    ("memory_phases_three", [*OK, "--memory-phases", "3"], {}, 2, "--memory-phases"),
    ("intrinsics_three_numbers", [*OK, "--intrinsics", "1,2,3"], {}, 2, "--intrinsics"),
    ("intrinsics_nan", [*OK, "--intrinsics", "nan,50,32,24"], {}, 2, "finite"),
    ("intrinsics_negative_focal", [*OK, "--intrinsics", "-5,-5,32,24"], {}, 2, "must be > 0"),
    ("fov_zero", [*OK, "--fov", "0"], {}, 2, "outside (1, 179)"),
    ("fov_nan", [*OK, "--fov", "nan"], {}, 2, "--fov"),
    ("fps_just_over_the_range", [*OK, "--fps", "240.5"], {}, 2, "outside [1, 240]"),
    ("traj_scale_nan", [*OK, "--traj-scale", "nan"], {}, 2, "--traj-scale"),
    ("dtype_unknown", [*OK, "--dtype", "float8"], {}, 2, "float8"),
    ("offload_on_cpu", [*OK, "--offload", "model"], {}, 2, "--offload"),
    ("fp8_without_denoiser", [*OK, "--fp8", "attention"], {}, 2, "--fp8"),
    ("out_not_mp4", [*TINY, "-o", "OUT/v.avi"], {}, 2, "must end in .mp4"),
    ("out_and_out_dir", [*TINY, "-o", "OUT/v.mp4", "--out-dir", "OUT"], {}, 2, "exactly one"),
    ("out_under_a_file", [*TINY, "-o", "A_FILE/v.mp4"], {}, 2, "is a file, not a folder"),
    ("out_in_an_unwritable_folder", [*TINY, "-o", "/proc/mirage-test/v.mp4"], {}, 2, "cannot write in"),
    ("report_is_the_video", [*OK, "--report", "OUT/v.mp4"], {}, 2, "also the output video"),
    ("report_is_the_input_image", [*OK, "--report", "IMG"], {}, 2, "would overwrite the input image"),
    ("report_is_a_symlink_to_the_image", [*OK, "--report", "LINK_TO_IMG"], {}, 2, "would overwrite the input image"),
    ("report_is_the_trajectory", [*RENDER, "--traj", "BIG_TXT", "--size", "64x48", "-o", "OUT/v.mp4", "--report",
                                  "BIG_TXT"], {}, 2, "would overwrite the --traj"),
    ("save_memory_is_the_input_image", [*OK, "--save-memory", "IMG"], {}, 2, "would overwrite the input image"),
    ("save_memory_is_memory_from", [*OK, "--memory-from", "MEM_GOOD", "--save-memory", "MEM_GOOD"], {}, 2,
     "would overwrite the --memory-from"),
    ("save_memory_is_the_depth", [*OK, "--depth", "DEPTH_NAN", "--save-memory", "DEPTH_NAN"], {}, 2,
     "would overwrite the --depth"),
    ("frames_dir_holds_users_photos", [*OK, "--frames-dir", "PHOTOS"], {}, 2, "mirage did not write"),
    ("frames_dir_is_a_file", [*OK, "--frames-dir", "A_FILE"], {}, 2, "exists as a file"),
    ("worldscore_is_a_file", [*OK, "--worldscore", "A_FILE"], {}, 2, "exists as a file"),
    ("report_in_a_batch", [*TINY, "IMG2", "--out-dir", "OUT", "--report", "OUT/r.json"], {"IMG2": "THIN_PNG"}, 2,
     "applies to one image"),
    # --- model folders
    ("preset_unknown", [*OK, "--preset", "nope"], {}, 2, "valid presets"),
    ("model_folder_missing", [*OK, "--vae", "nowhere_model"], {}, 2, "nowhere_model"),
    ("model_folder_empty", [*OK, "--vae", "MODEL_EMPTY"], {}, 2, "no config.json"),
    ("model_folder_pickle_only", [*OK, "--vae", "MODEL_PICKLE"], {}, 2, "safetensors only"),
    ("model_folder_without_weights", [*OK, "--vae", "MODEL_NOWEIGHTS"], {}, 2, "no .safetensors"),
    ("model_folder_remote_code", [*OK, "--vae", "MODEL_REMOTE"], {}, 2, "model_remote"),
    ("model_folder_bad_config", [*OK, "--vae", "MODEL_BADJSON"], {}, 2, "model_badjson"),
    # --- memory files
    ("memory_missing", [*OK, "--memory-from", "nowhere.memory.safetensors"], {}, 2, "not found"),
    ("memory_corrupt", [*OK, "--memory-from", "MEM_CORRUPT"], {}, 2, "bad.memory.safetensors"),
    ("memory_non_finite", [*OK, "--memory-from", "MEM_NAN"], {}, 2, "NaN/inf"),
    ("memory_foreign_safetensors", [*OK, "--memory-from", "MEM_FOREIGN"], {}, 2, "no mirage header"),
    ("memory_other_version", [*OK, "--memory-from", "MEM_VERSION"], {}, 2, "v9"),
    ("memory_with_a_batch", [*TINY, "IMG2", "--memory-from", "MEM_GOOD", "--out-dir", "OUT"], {"IMG2": "THIN_PNG"}, 2,
     "apply to one image"),
    # --- environment
    ("env_cache_is_a_file", OK, {"env:MIRAGE_CACHE": "A_FILE"}, 2, "MIRAGE_CACHE"),
    ("env_cache_under_a_file", OK, {"env:MIRAGE_CACHE": "A_FILE/cache"}, 2, "MIRAGE_CACHE"),
    ("env_max_frames_not_a_number", OK, {"env:MIRAGE_MAX_FRAMES": "lots"}, 2, "MIRAGE_MAX_FRAMES='lots'"),
    ("env_max_steps_zero", OK, {"env:MIRAGE_MAX_STEPS": "0"}, 2, "MIRAGE_MAX_STEPS"),
    ("env_presets_dir_missing", OK, {"env:MIRAGE_PRESETS_DIR": "nowhere_presets"}, 2, "MIRAGE_PRESETS_DIR"),
    # --- mirage traj
    ("traj_convert_onto_its_input", ["traj", "convert", "BIG_TXT", "--size", "64x48", "-o", "BIG_TXT"], {}, 2,
     "would overwrite the trajectory"),
    ("traj_convert_onto_a_symlinked_input", ["traj", "convert", "IMG_TRAJ", "--size", "64x48", "-o", "LINK_TRAJ"], {},
     2, "would overwrite the trajectory"),
    ("traj_convert_into_colmap_model", ["traj", "convert", "COLMAP", "-o", "COLMAP_CAMS"], {}, 2,
     "would overwrite the trajectory"),
    ("traj_show_plot_onto_its_input", ["traj", "show", "BIG_TXT", "--size", "64x48", "--plot", "BIG_TXT"], {}, 2,
     "would overwrite the trajectory"),
    ("traj_show_alias_bomb", ["traj", "show", "ALIAS_BOMB", "--size", "64x48"], {}, 2, "expected a string"),
    ("traj_show_image_bomb", ["traj", "show", "orbit", "--image", "BOMB_PNG"], {}, 2, "MIRAGE_MAX_IMAGE_PIXELS"),
]


#: Cases click itself rejects (a value outside an Enum option's choices): its usage error, not mirage's red line.
CLICK_USAGE_ERRORS = {"traj_unknown_format", "dtype_unknown"}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, size, mtime and (for files) content hash."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink() or not p.is_file():
            out[str(p.relative_to(root))] = ("other", st.st_mode)
        else:
            out[str(p.relative_to(root))] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    return d, _write_files(d)


def test_the_battery_is_large_and_distinct():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len({(tuple(c[1]), tuple(sorted(c[2].items()))) for c in CASES}) == len(CASES), "two cases run the same input"
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, files, monkeypatch, capsys):
    from mirage.hub import build_tiny

    build_tiny()  # the session's tiny models (cached): not part of what a case may leave behind
    name, argv, env, code, fragment = case
    root, f = files
    subst = {k: v for k, v in env.items() if not k.startswith("env:")}

    def resolve(token: str) -> str:
        token = subst.get(token, token)
        if token in f:
            return str(f[token])
        if token.startswith("OUT"):
            return str(root / "out" / token[3:].lstrip("/")) if token != "OUT" else str(root / "out")
        if "/" in token and token.split("/")[0] in f:
            head, _, rest = token.partition("/")
            return str(f[head] / rest)
        if token.endswith((".png", ".npy", ".safetensors", "_model", "_presets")):
            return str(root / token)
        return token

    args = [resolve(a) for a in argv]
    for k, v in env.items():
        if k.startswith("env:"):
            monkeypatch.setenv(k[4:], resolve(v))
    monkeypatch.chdir(root)
    before = _snapshot(root)
    got, out, err = run_main(monkeypatch, capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert got == code, (got, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if name in CLICK_USAGE_ERRORS:  # an Enum option's typo: click's own usage error, naming the value
        assert code == 2 and "Invalid value for" in err and fragment in err, err
    else:
        assert len(lines) == 1, err
        assert fragment in lines[0], (fragment, lines[0])
        assert len(lines[0]) < 600, lines[0]  # values echoed in an error are capped
    assert _snapshot(root) == before, f"{name}: files changed, appeared or vanished"
