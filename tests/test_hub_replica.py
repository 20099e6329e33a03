"""A new user's offline flow against exact replicas of the real Hub repos (``tests/hub_replica.py``).

The replicas are a Hugging Face cache with the real repos' file names, shard layouts and verbatim configs from
``../shared/hub`` (only the size keys in ``hub_replica.SHRUNK`` changed). Through them: ``mirage models`` shows what is
cached, ``HF_HUB_OFFLINE=1 mirage render`` works with each preset and its default depth model, and the failures a
user meets (a missing or truncated shard, a config of another class, a repo not cached) are each one line naming
the repo, the revision, the file and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests import hub_replica
from tests._cli import run_main
from tests.conftest import REPO, shared_path

WAN_13B = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
WAN_14B = "Wan-AI/Wan2.1-VACE-14B-diffusers"
#: Files of the real repos a replica leaves out, and why.
OMITTED = {
    "tokenizer/spiece.model": "transformers' T5 tokenizer reads tokenizer.json; no real sentencepiece model here",
    "README.md": "not loaded", ".gitattributes": "not loaded",
}
IMAGE = REPO / "examples" / "room" / "image.png"
DEPTH = REPO / "examples" / "room" / "depth.png"


@pytest.fixture(scope="session")
def replica_cache(tmp_path_factory) -> Path:
    shared_path("hub")
    return hub_replica.build_cache(tmp_path_factory.mktemp("hf") / "hub")


@pytest.fixture
def hf_cache(replica_cache, tmp_path, monkeypatch) -> Path:
    """A private copy of the replica cache, used by huggingface_hub (and so diffusers/transformers) offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    shutil.copytree(replica_cache, cache, symlinks=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MIRAGE_CACHE", str(tmp_path / "mirage-cache"))  # no prompt embeddings cached by other tests
    return cache


def _snapshot(cache: Path, repo_id: str) -> Path:
    root = cache / ("models--" + repo_id.replace("/", "--"))
    return root / "snapshots" / (root / "refs" / "main").read_text()


def _render(monkeypatch, capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "render", IMAGE, "--traj", "orbit", "--size", "64x48", "--frames", "5",
                    "--steps", "2", "-o", out, *extra)


# ---------------------------------------------------------------------------------------------- the replicas


@pytest.mark.parametrize("repo_id", [WAN_13B, WAN_14B])
def test_replica_has_the_real_files_and_configs(replica_cache, repo_id):
    snap = _snapshot(replica_cache, repo_id)
    rows = hub_replica.listing(repo_id.replace("/", "--"))
    real = {r["path"] for r in rows} - set(OMITTED)
    have = {str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file()}
    assert real <= have, f"missing from the replica: {sorted(real - have)}"
    assert have - real <= {"transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
                           "model_index.json", "vae/config.json", "scheduler/scheduler_config.json"}
    assert len([p for p in have if p.startswith("transformer/") and p.endswith(".safetensors")]) == (
        13 if "14B" in repo_id else 2)
    assert all((snap / p).is_symlink() for p in have)  # huggingface_hub's layout: snapshot files link to blobs
    real14 = shared_path("hub", "Wan-AI--Wan2.1-VACE-14B-diffusers")
    for name in ("model_index.json", "scheduler/scheduler_config.json"):
        assert (snap / name).read_bytes() == (real14 / name).read_bytes()  # verbatim
    for name, verbatim in (("text_encoder/config.json", real14 / "text_encoder" / "config.json"),
                           ("transformer/config.json", real14 / "transformer" / "config.json" if "14B" in repo_id else
                            shared_path("hub", "_related", "callgg--wan-decoder", "transformer", "config.json"))):
        got, want = json.loads((snap / name).read_text()), json.loads(verbatim.read_text())
        assert list(got) == list(want)  # same keys, same order
        assert {k for k in want if got[k] != want[k]} == set(hub_replica.SHRUNK[name])  # only the listed keys shrunk
    vae = json.loads((snap / "vae" / "config.json").read_text())
    partial = (real14 / "vae" / "config.json.partial").read_text()
    restored = {**vae, "base_dim": 96, "num_res_blocks": 2}
    text = json.dumps(restored, indent=2) + "\n"
    assert text.startswith(partial.rsplit("\n", 2)[0]) and len(text.encode()) == 724  # the real file's size


def test_depth_pro_replica_keeps_the_real_preprocessor(replica_cache):
    snap = _snapshot(replica_cache, "apple/DepthPro-hf")
    real = shared_path("hub", "apple--DepthPro-hf", "preprocessor_config.json")
    assert (snap / "preprocessor_config.json").read_bytes() == real.read_bytes()
    assert json.loads(real.read_text())["image_mean"] == 0.5  # the scalar form mirage once could not read


def test_preset_sizes_are_the_real_repos(replica_cache):
    from mirage import hub

    def total(repo_dir: str, folder: str) -> float:
        rows = [r for r in hub_replica.listing(repo_dir) if r["path"].startswith(folder + "/")]
        known = [int(r["size_bytes"]) for r in rows if r["size_bytes"]]
        unknown = sum(1 for r in rows if not r["size_bytes"] and r["path"].endswith(".safetensors"))
        shards = [int(r["size_bytes"]) for r in rows if r["size_bytes"] and r["path"].endswith(".safetensors")]
        return sum(known) + (unknown * statistics.median(shards) if unknown else 0)

    for preset, repo_dir in ((hub.Preset.WAN_VACE_1_3B, "Wan-AI--Wan2.1-VACE-1.3B-diffusers"),
                             (hub.Preset.WAN_VACE_14B, "Wan-AI--Wan2.1-VACE-14B-diffusers")):
        spec = hub.PRESETS[preset]
        for comp in ("transformer", "text_encoder", "vae", "tokenizer"):
            listed = total(repo_dir, comp)
            assert spec.get(hub.Component(comp)).size_bytes == pytest.approx(listed, rel=0.01), (preset, comp)
    depth = hub.preset_components("wan-vace-1.3b")[-1]
    assert depth.size_bytes == pytest.approx(int(hub_replica.listing("apple--DepthPro-hf")[3]["size_bytes"]), rel=0.01)
    assert hub.list_presets()[0].download_bytes == pytest.approx(20.9e9, rel=0.01)  # ~19 GB of Wan + 1.9 GB depth


def test_random_weight_builds_are_the_real_configs():
    from diffusers import AutoencoderKLWan

    from mirage.random_weights import TRANSFORMER_CONFIGS

    for preset, path in (("wan-vace-14b", shared_path("hub", "Wan-AI--Wan2.1-VACE-14B-diffusers", "transformer", "config.json")),
                         ("wan-vace-1.3b", shared_path("hub", "_related", "callgg--wan-decoder", "transformer", "config.json"))):
        real = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        ours = {k: list(v) if isinstance(v, tuple) else v for k, v in TRANSFORMER_CONFIGS[preset].items()}
        assert {k: real[k] for k in ours} == ours, preset
        assert {k for k, v in real.items() if v is not None} <= set(ours), preset
    partial = shared_path("hub", "Wan-AI--Wan2.1-VACE-14B-diffusers", "vae", "config.json.partial").read_text()
    vae_real = json.loads(partial.rstrip("\n").rsplit("\n", 1)[0] + "\n" + hub_replica._VAE_TAIL)
    default = dict(AutoencoderKLWan().config)
    for k, v in vae_real.items():
        if not k.startswith("_"):
            assert default[k] == v, k


# ---------------------------------------------------------------------------------------------- the user's flow


def test_models_shows_what_is_cached(hf_cache, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "models")
    assert code == 0
    rows = [line for line in out.splitlines() if "Wan-AI/Wan2.1-VACE-1.3B-diffusers:" in line]
    assert len(rows) == 5 and all("yes" in r for r in rows)
    assert "7.15 GB" in out and "63.20 GB" in out and "11.37 GB" in out
    shard = _snapshot(hf_cache, WAN_13B) / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors"
    shard.unlink()
    code, out, _ = run_main(monkeypatch, capsys, "models")
    row = next(line for line in out.splitlines() if f"{WAN_13B}:transformer" in line)
    assert code == 0 and " no " in row


@pytest.mark.parametrize("preset", ["wan-vace-1.3b", "wan-vace-14b"])
def test_offline_render_each_preset_with_its_default_depth_model(hf_cache, tmp_path, monkeypatch, capsys, preset):
    out = tmp_path / "out.mp4"
    code, _, err = _render(monkeypatch, capsys, out, "--preset", preset)
    assert code == 0, err
    models = json.loads(out.with_suffix(".json").read_text())["models"]
    repo, rev = (WAN_13B, "main") if preset == "wan-vace-1.3b" else (WAN_14B, hub_replica.WAN_14B_COMMIT)
    for comp, cls in (("vae", "AutoencoderKLWan"), ("transformer", "WanVACETransformer3DModel"),
                      ("text_encoder", "UMT5EncoderModel"), ("tokenizer", "T5TokenizerFast"),
                      ("scheduler", "UniPCMultistepScheduler")):
        assert models[comp] == {"id": f"{repo}/{comp}", "revision": rev, "class": cls, "local": False}, comp
    assert models["depth"] == {"id": "apple/DepthPro-hf", "revision": "main", "class": "DepthProForDepthEstimation",
                               "local": False}


def test_offline_user_flow_in_a_fresh_process(replica_cache, tmp_path):
    """The real thing: a new process with HF_HOME pointing at the replica, as a user's shell would have it."""
    home = tmp_path / "hf"
    shutil.copytree(replica_cache, home / "hub", symlinks=True)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "COLUMNS": "250"}
    env.pop("HF_HUB_CACHE", None)
    models = subprocess.run([sys.executable, "-m", "mirage_cli", "models"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert models.returncode == 0, models.stderr
    assert sum("yes" in line for line in models.stdout.splitlines() if WAN_13B in line) == 5
    out = tmp_path / "v.mp4"
    render = subprocess.run([sys.executable, "-m", "mirage_cli", "render", str(IMAGE), "--traj", "orbit", "--size",
                             "64x48", "--frames", "5", "--steps", "2", "-o", str(out)],  # default depth model too
                            env=env, capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stderr
    assert out.stat().st_size > 0 and "Traceback" not in render.stderr and "UserWarning" not in render.stderr
    assert "Loading weights" not in render.stderr  # the library never prints (no tqdm bars from the loaders)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["models"]["depth"]["id"] == "apple/DepthPro-hf" and report["inputs"]["intrinsics_source"] == "depth model"


# ---------------------------------------------------------------------------------------------- failures


def _break_missing_shard(cache: Path) -> str:
    (_snapshot(cache, WAN_13B) / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    return "transformer/diffusion_pytorch_model-00002-of-00002.safetensors is not in the local Hugging Face cache"


def _break_truncated_shard(cache: Path) -> str:
    link = _snapshot(cache, WAN_13B) / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors"
    data = link.read_bytes()
    link.unlink()
    link.write_bytes(data[: len(data) // 2])  # an interrupted download
    return "transformer/diffusion_pytorch_model-00001-of-00002.safetensors: unreadable safetensors file, truncated"


def _break_class(cache: Path) -> str:
    link = _snapshot(cache, WAN_13B) / "transformer" / "config.json"
    cfg = json.loads(link.read_text())
    link.unlink()
    link.write_text(json.dumps({**cfg, "_class_name": "WanTransformer3DModel"}))
    return "transformer/config.json is a WanTransformer3DModel, expected WanVACETransformer3DModel"


def _break_not_cached(cache: Path) -> str:
    shutil.rmtree(cache / ("models--" + WAN_13B.replace("/", "--")))
    return "vae/config.json is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"


def _break_text_encoder_shard(cache: Path) -> str:
    (_snapshot(cache, WAN_13B) / "text_encoder" / "model-00003-of-00003.safetensors").unlink()
    return "text_encoder/model-00003-of-00003.safetensors is not in the local Hugging Face cache"


@pytest.mark.parametrize("breaker", [_break_missing_shard, _break_truncated_shard, _break_class, _break_not_cached,
                                     _break_text_encoder_shard])
def test_broken_cache_is_one_line_naming_repo_revision_file_and_fix(hf_cache, tmp_path, monkeypatch, capsys, breaker):
    expected = breaker(hf_cache)
    out = tmp_path / "out.mp4"
    code, _, err = _render(monkeypatch, capsys, out, "--depth", DEPTH, "--fov", "60")
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    error = next(line for line in lines if line.startswith("error:"))
    assert f"{WAN_13B}@main" in error and expected in " ".join(error.split()), err
    assert any(fix in err for fix in ("run `mirage download wan-vace-1.3b`", "download the component again",
                                      "pass the right repo or folder with --transformer")), err
    assert "Traceback" not in err and not out.exists() and not out.with_suffix(".json").exists()
