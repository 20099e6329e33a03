"""Exact offline replicas of the real Hub repos mirage's presets load, as a Hugging Face cache (not a test module).

A replica is laid out as huggingface_hub lays its cache (``models--owner--name/{blobs,snapshots/<commit>,refs/main}``,
snapshot files are symlinks to content-addressed blobs: sha256 for LFS files, the git blob sha1 for the others),
with every file name and shard layout of the real repo (``../shared/hub/<owner>--<name>/FILES.tsv``) and the real
configs verbatim wherever ``../shared/hub`` has them. Only the size keys listed in :data:`SHRUNK` are changed, so
that the weights are tiny; the weights are random and split over the real shard names.

What is not exact (the real text was never seen; ``../shared/hub/README.md``): the 1.3B repo's configs (the 14B
repo's verbatim model_index, scheduler and text-encoder configs are used, and the VACE-1.3B-shaped transformer config
of ``_related/callgg--wan-decoder``); the VAE config's last 8 lines (the standard ``AutoencoderKLWan`` tail, which
gives the real file's exact 724 bytes); the shard indexes' weight maps (built from the tiny weights); the tokenizer
(a tiny Unigram T5 tokenizer under the real file names; ``spiece.model`` is left out: transformers reads
``tokenizer.json``); Depth Pro's config past its 80 seen lines (a tiny ``DepthProConfig``); the commit of ``main``
where no full hash was seen (``fake_commit``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import torch

SHARED_HUB = Path(__file__).resolve().parents[2] / "shared" / "hub"

#: Every config key a replica changes from the real file, per config (the rest is verbatim).
SHRUNK = {
    "transformer/config.json": {"attention_head_dim": 8, "ffn_dim": 32, "num_attention_heads": 2, "num_layers": 2,
                                "text_dim": 32, "vace_layers": [0], "rope_max_seq_len": 32},
    "text_encoder/config.json": {"d_ff": 64, "d_kv": 8, "d_model": 32, "num_heads": 4, "num_layers": 2,
                                 "num_decoder_layers": 2, "vocab_size": 128},
    "vae/config.json": {"base_dim": 4, "num_res_blocks": 1},
    "depth/config.json": "a tiny DepthProConfig (dinov2 encoders of width 32, 1 layer) at the real 1536 px input",
}

# The standard AutoencoderKLWan tail after the 48 seen lines (gives exactly the 724 bytes the Hub shows).
_VAE_TAIL = '  "num_res_blocks": 2,\n  "temperal_downsample": [\n    false,\n    true,\n    true\n  ],\n  "z_dim": 16\n}\n'
WAN_14B_COMMIT = "33d59f4b703e484d3f28f5da4d065218dea42552"


def fake_commit(repo_id: str) -> str:
    """A stand-in 40-hex commit for a repo's ``main`` when its real full hash was never seen."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


def listing(repo_dir: str) -> list[dict[str, str]]:
    """Rows of ``../shared/hub/<repo_dir>/FILES.tsv``."""
    with open(SHARED_HUB / repo_dir / "FILES.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class RepoWriter:
    """Writes files into one repo of a Hugging Face cache, as huggingface_hub's downloads would."""

    def __init__(self, cache: Path, repo_id: str, commit: str, *, refs: tuple[str, ...] = ("main",)):
        self.root = cache / ("models--" + repo_id.replace("/", "--"))
        self.snapshot = self.root / "snapshots" / commit
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "refs").mkdir(parents=True, exist_ok=True)
        for ref in refs:
            (self.root / "refs" / ref).write_text(commit)

    def write(self, path: str, data: bytes) -> Path:
        lfs = path.endswith((".safetensors", ".model"))
        blob = self.root / "blobs" / (hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data))
        blob.write_bytes(data)
        link = self.snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, link.parent), link)
        return link

    def write_json(self, path: str, obj: dict) -> Path:
        return self.write(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def copy_verbatim(self, path: str, src: Path) -> Path:
        return self.write(path, src.read_bytes())

    def write_weights(self, folder: str, state: dict[str, torch.Tensor], shard_names: list[str], index_name: str | None):
        """``state`` split over the real shard file names (in key order), plus the index naming them."""
        from safetensors.torch import save

        keys = list(state)
        n = len(shard_names)
        weight_map = {}
        for i, name in enumerate(shard_names):
            part = {k: state[k].contiguous() for k in keys[i * len(keys) // n:(i + 1) * len(keys) // n]}
            self.write(f"{folder}/{name}", save(part, metadata={"format": "pt"}))
            weight_map.update({k: name for k in part})
        if index_name is not None:
            total = sum(t.numel() * t.element_size() for t in state.values())
            self.write_json(f"{folder}/{index_name}", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _saved_state(model) -> dict[str, torch.Tensor]:
    """The tensors transformers' own ``save_pretrained`` writes (tied weights once)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        return load_file(str(Path(d) / "model.safetensors"))


def _shrunk(config: dict, which: str) -> dict:
    return {**config, **SHRUNK[which]}


def _shards(rows: list[dict[str, str]], folder: str, suffix: str = ".safetensors") -> list[str]:
    return sorted(r["path"].split("/", 1)[1] for r in rows if r["path"].startswith(folder + "/")
                  and r["path"].endswith(suffix))


def _tiny_tokenizer_files(out: RepoWriter) -> None:
    import tempfile

    from transformers import T5TokenizerFast

    from mirage.hub.tiny import TINY_WORDS

    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)] + [("▁" + w, -1.0) for w in TINY_WORDS]
             + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"])
    tok = T5TokenizerFast(vocab=vocab, extra_ids=0, unk_id=2)
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            out.copy_verbatim(f"tokenizer/{name}", Path(d) / name)
    out.write_json("tokenizer/special_tokens_map.json", {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})


def build_wan_repo(cache: Path, repo_id: str, *, seed: int = 0) -> Path:
    """A replica of ``Wan-AI/Wan2.1-VACE-{1.3B,14B}-diffusers`` in ``cache`` (a ``HF_HUB_CACHE`` folder).

    Returns:
        the snapshot folder.
    """
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    is_14b = "14B" in repo_id
    repo_dir = repo_id.replace("/", "--")
    rows = listing(repo_dir)
    real14 = SHARED_HUB / "Wan-AI--Wan2.1-VACE-14B-diffusers"
    out = RepoWriter(cache, repo_id, WAN_14B_COMMIT if is_14b else fake_commit(repo_id))
    out.copy_verbatim("model_index.json", real14 / "model_index.json")
    out.copy_verbatim("scheduler/scheduler_config.json", real14 / "scheduler" / "scheduler_config.json")

    tcfg_path = real14 / "transformer" / "config.json" if is_14b else (
        SHARED_HUB / "_related" / "callgg--wan-decoder" / "transformer" / "config.json")
    tcfg = _shrunk(json.loads(tcfg_path.read_text()), "transformer/config.json")
    out.write_json("transformer/config.json", tcfg)
    torch.manual_seed(seed)
    transformer = WanVACETransformer3DModel.from_config(tcfg)
    out.write_weights("transformer", transformer.state_dict(), _shards(rows, "transformer"),
                      "diffusion_pytorch_model.safetensors.index.json")

    vcfg = json.loads((real14 / "vae" / "config.json.partial").read_text().rstrip("\n").rsplit("\n", 1)[0] + "\n"
                      + _VAE_TAIL)
    vcfg = _shrunk(vcfg, "vae/config.json")
    out.write_json("vae/config.json", vcfg)
    out.write_weights("vae", AutoencoderKLWan.from_config(vcfg).state_dict(), ["diffusion_pytorch_model.safetensors"],
                      None)

    ecfg = _shrunk(json.loads((real14 / "text_encoder" / "config.json").read_text()), "text_encoder/config.json")
    out.write_json("text_encoder/config.json", ecfg)
    encoder = UMT5EncoderModel(UMT5Config(**{k: v for k, v in ecfg.items() if not k.startswith("_")})).to(torch.bfloat16)
    out.write_weights("text_encoder", _saved_state(encoder), _shards(rows, "text_encoder"), "model.safetensors.index.json")
    _tiny_tokenizer_files(out)
    return out.snapshot


def tiny_depth_pro_config():
    """A tiny Depth Pro at the real input size (1536 px: patches of 384 px over three scales)."""
    from transformers import DepthProConfig

    def enc() -> dict:
        return dict(model_type="dinov2", hidden_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=384,
                    patch_size=16, out_indices=[1], use_mask_token=False)

    return DepthProConfig(
        patch_size=384, fusion_hidden_size=16, intermediate_hook_ids=[0, 0], intermediate_feature_dims=[16, 16],
        scaled_images_feature_dims=[16, 16, 16], use_fov_model=True, num_fov_head_layers=1,
        image_model_config=enc(), patch_model_config=enc(), fov_model_config=enc(),
    )


def build_depth_pro_repo(cache: Path, *, seed: int = 0) -> Path:
    """A replica of ``apple/DepthPro-hf``: the verbatim preprocessor config, a tiny Depth Pro under the real names."""
    from safetensors.torch import save
    from transformers import DepthProForDepthEstimation

    from mirage.depth.tiny import _calibrate_conv

    repo_id = "apple/DepthPro-hf"
    out = RepoWriter(cache, repo_id, fake_commit(repo_id))
    out.copy_verbatim("preprocessor_config.json", SHARED_HUB / "apple--DepthPro-hf" / "preprocessor_config.json")
    torch.manual_seed(seed)
    cfg = tiny_depth_pro_config()
    cfg.architectures = ["DepthProForDepthEstimation"]
    model = DepthProForDepthEstimation(cfg).eval()
    # random heads give nonsense metric depth and FoV (mirage refuses them): set their output statistics as the
    # tiny preset's builder does, so the replica predicts ~1 m and ~55 degrees
    calib = torch.rand(2, 3, 1536, 1536) * 2 - 1  # (2, 3, 1536, 1536) in the processor's [-1, 1] range
    _calibrate_conv(model, model.head.layers[-2], calib, mean=1.0, std=0.3)
    _calibrate_conv(model, model.fov_model.head.layers[-1], calib, mean=55.0, std=2.0)
    out.write("config.json", cfg.to_json_string().encode())
    out.write("model.safetensors", save(_saved_state(model), metadata={"format": "pt"}))
    return out.snapshot


def build_cache(cache: Path) -> Path:
    """Replicas of every Hub repo the Wan presets load by default: both VACE repos and Depth Pro."""
    cache.mkdir(parents=True, exist_ok=True)
    build_wan_repo(cache, "Wan-AI/Wan2.1-VACE-1.3B-diffusers")
    build_wan_repo(cache, "Wan-AI/Wan2.1-VACE-14B-diffusers")
    build_depth_pro_repo(cache)
    return cache
