"""mirage.depth against the real Hub files in ../shared/hub: the verbatim preprocessor configs and config.json files
of apple/DepthPro-hf and Depth Anything V2, with tiny random weights, through the real loading path.

Each replica folder holds a real preprocessor_config.json byte for byte and a config.json that is the real one
with only the size keys in ``*_SHRUNK`` changed (so the model is small enough for a CPU test), plus random
safetensors weights.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from mirage.depth import (
    DEFAULT_DEPTH_PARAMS,
    DepthFamily,
    DepthKind,
    build_tiny_depth_model,
    depth_pro_config,
    depth_pro_processor,
    load_depth_model,
)
from mirage.errors import ModelError

CPU = torch.device("cpu")
PRO = "apple--DepthPro-hf"
DA_SMALL = "depth-anything--Depth-Anything-V2-Small-hf"
DA_INDOOR = "depth-anything--Depth-Anything-V2-Metric-Indoor-Small-hf"
DA_OUTDOOR = "depth-anything--Depth-Anything-V2-Metric-Outdoor-Small-hf"

# the only keys changed from the real configs (size keys); everything else is the real value
DEPTH_PRO_SHRUNK = {
    "fusion_hidden_size": (256, 16),
    "intermediate_hook_ids": ([11, 5], [1, 0]),  # the patch encoder has 2 layers here, not 24
    "intermediate_feature_dims": ([256, 256], [8, 8]),
    "scaled_images_feature_dims": ([1024, 1024, 512], [8, 8, 8]),
}
DEPTH_PRO_ENCODER_SHRUNK = {  # in image_model_config, patch_model_config and fov_model_config
    "hidden_size": (1024, 16),
    "num_hidden_layers": (24, 2),
    "num_attention_heads": (16, 2),
    "stage_names": ("stem, stage1..stage24", "stem, stage1, stage2"),
    "out_features": (["stage24"], ["stage2"]),
    "out_indices": ([24], [2]),
}
DEPTH_ANYTHING_SHRUNK = {
    "backbone_config.hidden_size": (384, 16),
    "backbone_config.num_attention_heads": (6, 2),
    "reassemble_hidden_size": (384, 16),
    "neck_hidden_sizes": ([48, 96, 192, 384], [8, 8, 8, 8]),
    "fusion_hidden_size": (64, 8),
    "head_hidden_size": (32, 8),
}


def _photo_path() -> Path:
    return shared_path("images", "pexels_0.png")


def _photo() -> torch.Tensor:
    """(3, 320, 640) float32 in [-1, 1]: a real living-room photo."""
    rgb = np.array(Image.open(_photo_path()).convert("RGB"))  # (320, 640, 3) uint8
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0


def _shrunk_depth_pro_config() -> dict:
    config = depth_pro_config().to_dict()
    for key, (real, small) in DEPTH_PRO_SHRUNK.items():
        assert config[key] == real, key
        config[key] = small
    for sub in ("image_model_config", "patch_model_config", "fov_model_config"):
        enc = config[sub]
        assert enc["stage_names"] == ["stem"] + [f"stage{i}" for i in range(1, 25)]
        for key, (real, small) in DEPTH_PRO_ENCODER_SHRUNK.items():
            assert key == "stage_names" or enc[key] == real, (sub, key)
            enc[key] = ["stem", "stage1", "stage2"] if key == "stage_names" else small
    return config


def _shrunk_depth_anything_config(real: dict) -> dict:
    config = json.loads(json.dumps(real))
    for path, (old, small) in DEPTH_ANYTHING_SHRUNK.items():
        *parents, key = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        assert node[key] == old, path
        node[key] = small
    return config


def _save_weights(folder: Path, seed: int) -> None:
    """Random weights for ``folder/config.json`` as model.safetensors; config.json itself is left as written."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForDepthEstimation

    torch.manual_seed(seed)
    model = AutoModelForDepthEstimation.from_config(AutoConfig.from_pretrained(folder)).eval()
    with torch.no_grad():
        if hasattr(model, "fov_model"):  # Depth Pro: a predicted FoV of 55 degrees, canonical inverse depth 1
            for conv, value in ((model.fov_model.head.layers[-1], 55.0), (model.head.layers[-2], 1.0)):
                conv.weight.zero_()
                conv.bias.fill_(value)
        else:  # Depth Anything: disparity / sigmoid input ~ 1 instead of ~ 0 (ReLU of random noise)
            model.head.conv3.bias.fill_(1.0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def real_dirs(tmp_path_factory) -> dict[str, Path]:
    """Replica folders: real preprocessor_config.json verbatim, real config.json with size keys shrunk."""
    hub = shared_path("hub")
    root = tmp_path_factory.mktemp("real_depth")
    dirs = {"pro": root / "pro", "da_rel": root / "da_rel", "da_metric": root / "da_metric"}
    for d in dirs.values():
        d.mkdir()
    shutil.copyfile(hub / PRO / "preprocessor_config.json", dirs["pro"] / "preprocessor_config.json")
    (dirs["pro"] / "config.json").write_text(json.dumps(_shrunk_depth_pro_config(), indent=2, sort_keys=True))
    shutil.copyfile(hub / DA_SMALL / "preprocessor_config.json", dirs["da_rel"] / "preprocessor_config.json")
    real = json.loads((hub / DA_SMALL / "config.json").read_text())
    (dirs["da_rel"] / "config.json").write_text(json.dumps(_shrunk_depth_anything_config(real), indent=2))
    # the Outdoor-Small preprocessor (verbatim) with the Indoor-Small config (the metric config ../shared has)
    shutil.copyfile(hub / DA_OUTDOOR / "preprocessor_config.json", dirs["da_metric"] / "preprocessor_config.json")
    real = json.loads((hub / DA_INDOOR / "config.json").read_text())
    (dirs["da_metric"] / "config.json").write_text(json.dumps(_shrunk_depth_anything_config(real), indent=2))
    for i, d in enumerate(dirs.values()):
        _save_weights(d, seed=i)
    return dirs


def _load(path: Path, **kw):
    return load_depth_model(str(path), revision=None, device=CPU, dtype=torch.float32, **kw)


# ---------------------------------------------------------------------------------------------------------------
# preprocessing: the model's own processor, fed what it would get from the same 8-bit photo


@pytest.mark.parametrize("which, processor_class, shape", [
    ("pro", "DepthProImageProcessor", (1, 3, 1536, 1536)),  # squashed to the square size, no aspect kept
    ("da_rel", "DPTImageProcessor", (1, 3, 252, 518)),  # 320x640: width scale 0.81 is closer to 1, multiples of 14
    ("da_metric", "DPTImageProcessor", (1, 3, 252, 518)),
])
def test_pixel_values_equal_the_processor_on_the_photo(real_dirs, which, processor_class, shape):
    from transformers import AutoImageProcessor

    est = _load(real_dirs[which])
    assert type(est.processor).__name__ == processor_class and est.processor.backend == "torchvision"
    mine = est.pixel_values(_photo()[None])
    reference = AutoImageProcessor.from_pretrained(str(real_dirs[which]), backend="torchvision")
    ref = reference(images=Image.open(_photo_path()).convert("RGB"), return_tensors="pt")["pixel_values"]
    assert mine.shape == ref.shape == shape and mine.dtype == torch.float32
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-5)
    if which == "pro":  # scalar mean = std = 0.5: 8-bit 0..255 -> [-1, 1]
        assert est.processor.image_mean == 0.5 and est.processor.image_std == 0.5
        assert -1.0 <= float(mine.min()) < -0.5 and 0.5 < float(mine.max()) <= 1.0


def test_depth_anything_pixel_values_close_to_the_pil_reference(real_dirs):
    """The torchvision processor mirage runs agrees with transformers' PIL DPT processor (the original numerics)."""
    from transformers import DPTImageProcessorPil

    mine = _load(real_dirs["da_metric"]).pixel_values(_photo()[None])
    ref = DPTImageProcessorPil.from_pretrained(str(real_dirs["da_metric"]))(
        images=Image.open(_photo_path()).convert("RGB"), return_tensors="pt"
    )["pixel_values"]
    assert mine.shape == ref.shape == (1, 3, 252, 518)
    assert float((mine - ref).abs().mean()) < 0.02  # PIL vs torch bicubic; normalised values have std ~1


# ---------------------------------------------------------------------------------------------------------------
# end to end, each family


def test_depth_pro_estimate_end_to_end(real_dirs):
    est = _load(real_dirs["pro"])
    assert est.family is DepthFamily.DEPTH_PRO and est.kind is DepthKind.METRIC and est.predicts_fov
    res = est.estimate(_photo())
    assert res.depth.shape == res.valid.shape == (320, 640) and res.valid.all()
    assert res.fov_x_deg == pytest.approx(55.0, abs=1e-3)  # the FoV head was set to a constant 55 degrees
    # metric depth = 1 / (canonical inverse depth * 2 tan(fov / 2)), canonical inverse depth set to 1 everywhere
    expected = 1.0 / (2.0 * math.tan(math.radians(55.0) / 2.0))
    torch.testing.assert_close(res.depth, torch.full_like(res.depth, expected), rtol=1e-5, atol=0)
    wide = est.estimate(_photo(), fov_x_deg=90.0)  # a given FoV replaces the predicted one in the metric scale
    torch.testing.assert_close(wide.depth, torch.full_like(res.depth, 0.5), rtol=1e-5, atol=0)


@pytest.mark.parametrize("which, kind", [("da_rel", DepthKind.RELATIVE), ("da_metric", DepthKind.METRIC)])
def test_depth_anything_estimate_end_to_end(real_dirs, which, kind):
    est = _load(real_dirs[which], max_batch=2)
    assert est.family is DepthFamily.DEPTH_ANYTHING and est.kind is kind and not est.predicts_fov
    image = _photo()
    res = est.estimate(image)
    assert res.depth.shape == (320, 640) and res.valid.float().mean() > 0.99 and res.fov_x_deg is None
    if kind is DepthKind.METRIC:
        assert 0 < float(res.depth[res.valid].min()) and float(res.depth.max()) <= 20.0  # sigmoid * max_depth 20
    batch = est.estimate_batch(torch.stack([image, image.flip(-1), image]))  # chunks of 2 + 1
    torch.testing.assert_close(batch[0], res.depth)
    torch.testing.assert_close(batch[2], res.depth)


# ---------------------------------------------------------------------------------------------------------------
# the preprocessor config: unreadable or of another kind is one line naming the file


def test_unreadable_preprocessor_config_is_one_line(tmp_path, real_dirs):
    d = shutil.copytree(real_dirs["da_metric"], tmp_path / "m")
    (d / "preprocessor_config.json").write_text('{"image_processor_type": "DPTImageProcessor", "size": ')
    with pytest.raises(ModelError, match="preprocessor_config.json") as err:
        _load(d)
    assert "\n" not in str(err.value) and str(d) in str(err.value)


def test_non_depth_processor_is_refused(tmp_path, real_dirs):
    d = shutil.copytree(real_dirs["da_metric"], tmp_path / "m")
    config = json.loads((d / "preprocessor_config.json").read_text())
    config["image_processor_type"] = "CLIPImageProcessor"
    (d / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="CLIPImageProcessor.*not a depth-estimation image processor"):
        _load(d)


def test_missing_torchvision_is_one_line(monkeypatch, real_dirs):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_torchvision_available", lambda: False)
    with pytest.raises(ModelError, match="preprocessor_config.json\\) needs torchvision.*pip install torchvision"):
        _load(real_dirs["pro"])


# ---------------------------------------------------------------------------------------------------------------
# the tiny builder writes real-format processor files


def test_tiny_processor_files_have_the_real_format(tmp_path):
    from transformers import AutoImageProcessor

    hub = shared_path("hub")
    build_tiny_depth_model(tmp_path / "pro", seed=0)
    build_tiny_depth_model(tmp_path / "da", seed=0, family=DepthFamily.DEPTH_ANYTHING, kind=DepthKind.METRIC)
    for tiny, real_repo in (("pro", PRO), ("da", DA_OUTDOOR)):
        real = json.loads((hub / real_repo / "preprocessor_config.json").read_text())
        real = {k: v for k, v in real.items() if v is not None}  # "size_divisor": null is not written by v5
        mine = json.loads((tmp_path / tiny / "preprocessor_config.json").read_text())
        assert set(real) <= set(mine), (tiny, set(real) - set(mine))
        for key in set(real) - {"size", "image_processor_type"}:
            assert mine[key] == real[key], (tiny, key)
        real_cls = type(AutoImageProcessor.from_pretrained(str(hub / real_repo), backend="torchvision"))
        assert type(AutoImageProcessor.from_pretrained(str(tmp_path / tiny), backend="torchvision")) is real_cls
    assert mine["size"] == {"height": 56, "width": 56}
    pro = json.loads((tmp_path / "pro" / "preprocessor_config.json").read_text())
    assert pro["image_mean"] == 0.5 and pro["image_std"] == 0.5 and pro["size"] == {"height": 128, "width": 128}


# ---------------------------------------------------------------------------------------------------------------
# the real Depth Pro config and processor (random-weight builds at the real size)


def _partial_json(text: str) -> tuple[dict, tuple[str, ...]]:
    """Parse a JSON file cut after a complete line: the open lists and objects are closed.

    Returns the parsed dict and the key path of the list that was cut (its items are only a prefix)."""
    lines = text.rstrip("\n").split("\n")
    stack, path, key = [], [], None
    for line in lines:
        s = line.strip()
        if ":" in s and s.startswith('"'):
            key = json.loads(s.split(":", 1)[0])
            s = s.split(":", 1)[1].strip()
        if s.rstrip(",") in ("{", "["):
            stack.append("}" if s.startswith("{") else "]")
            path.append(key)
        elif s.rstrip(",") in ("}", "]"):
            stack.pop()
            path.pop()
    body = "\n".join(lines).rstrip().rstrip(",")
    cut = tuple(k for k in path[1:] if k is not None) if stack and stack[-1] == "]" else ()
    return json.loads(body + "".join(reversed(stack))), cut


def _assert_matches(real, mine, where: str, cut: tuple[str, ...], path: tuple[str, ...] = ()) -> int:
    """Every key of ``real`` has the same value in ``mine`` (the cut list: a prefix). Returns the values checked."""
    if isinstance(real, dict):
        assert isinstance(mine, dict), where
        return sum(_assert_matches(v, mine.get(k, "<missing>"), f"{where}.{k}", cut, path + (k,))
                   for k, v in real.items())
    if path == cut:
        assert mine[: len(real)] == real, where
    else:
        assert mine == real, f"{where}: real {real!r}, mirage {mine!r}"
    return 1


def test_depth_pro_config_is_the_real_one():
    from transformers import DepthProForDepthEstimation

    partial = shared_path("hub", PRO, "config.json.partial").read_text()
    assert len(partial.splitlines()) == 80
    real, cut = _partial_json(partial)
    assert cut == ("image_model_config", "stage_names")
    config = depth_pro_config()
    checked = _assert_matches(real, config.to_dict(), "config", cut)
    assert checked >= 19  # architectures, fov_model_config (10 keys), fusion_hidden_size, image_model_config (9)
    with torch.device("meta"):
        model = DepthProForDepthEstimation(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == DEFAULT_DEPTH_PARAMS and abs(n - 952e6) / 952e6 < 0.005
    assert model.fov_model is not None and len(model.depth_pro.encoder.image_encoder.model.encoder.layer) == 24


def test_depth_pro_processor_is_the_real_one():
    from transformers import AutoImageProcessor

    folder = shared_path("hub", PRO)
    real = json.loads((folder / "preprocessor_config.json").read_text())
    mine = depth_pro_processor().to_dict()
    for key in set(real) - {"image_processor_type"}:  # the real file names the v4 alias ...Fast
        assert mine[key] == real[key], key
    assert type(depth_pro_processor()) is type(AutoImageProcessor.from_pretrained(str(folder), backend="torchvision"))
