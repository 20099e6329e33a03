"""Hub layer: presets, the tiny preset through the real loading path, strict/safetensors-only loads, offline errors,
and the prompt-embedding cache."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mirage import hub
from mirage.errors import InputError, ModelError
from mirage.hub import load_vae
from mirage.hub import tiny as hub_tiny
from mirage.prompt import PromptCache, encode_prompt
from mirage.vae import VaeKind


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirage-cache")
    hub.build_tiny(root)
    return root


@pytest.fixture
def no_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_presets_table():
    assert hub.parse_preset("wan-vace-1.3b") is hub.Preset.WAN_VACE_1_3B is hub.DEFAULT_PRESET
    with pytest.raises(InputError, match="valid presets: wan-vace-1.3b, wan-vace-14b, preview, tiny"):
        hub.parse_preset("wan-1.3b")
    spec = hub.PRESETS[hub.Preset.WAN_VACE_1_3B]
    vae = spec.get(hub.Component.VAE)
    assert (vae.repo_id, vae.subfolder, vae.cls_name) == ("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "vae", "AutoencoderKLWan")
    assert spec.get(hub.Component.SCHEDULER).cls_name == "UniPCMultistepScheduler"
    assert hub.PRESETS[hub.Preset.WAN_VACE_14B].get(hub.Component.TRANSFORMER).repo_id == "Wan-AI/Wan2.1-VACE-14B-diffusers"
    assert hub.PRESETS[hub.Preset.PREVIEW].get(hub.Component.TRANSFORMER) is None
    infos = {i.name: i for i in hub.list_presets()}
    assert list(infos) == ["wan-vace-1.3b", "wan-vace-14b", "preview", "tiny"]
    assert infos["wan-vace-1.3b"].default and not infos["tiny"].default and infos["tiny"].local
    assert infos["wan-vace-14b"].download_bytes > infos["wan-vace-1.3b"].download_bytes > 10e9
    assert infos["preview"].download_bytes == infos["wan-vace-1.3b"].components[-1].size_bytes  # depth only: TAESD is embedded


def test_tiny_preset_loads_through_load_components(tiny_root):
    before = {p.name: p.stat().st_mtime_ns for p in (tiny_root / hub.TINY_VERSION).iterdir()}
    comps = hub.load_components("tiny", tiny_root=tiny_root, dtype=torch.float32, need_depth=False)
    after = {p.name: p.stat().st_mtime_ns for p in (tiny_root / hub.TINY_VERSION).iterdir()}
    assert before == after  # built once, reused
    assert comps.vae.kind is VaeKind.WAN and comps.vae.latent_channels == 16
    assert type(comps.transformer).__name__ == "WanVACETransformer3DModel"
    assert comps.transformer.config.vace_layers == [0]
    assert comps.scheduler_config["_class_name"] == "UniPCMultistepScheduler"
    assert comps.scheduler_config["flow_shift"] == 3.0
    assert set(comps.resolved) == {"vae", "transformer", "scheduler", "text_encoder", "tokenizer"}
    assert all(r.local for r in comps.resolved.values())
    te = comps.text_encoder()
    assert te is not comps.text_encoder()  # not kept resident
    assert comps.tokenizer() is comps.tokenizer()
    ids = comps.tokenizer()("a room", padding="max_length", max_length=6).input_ids
    assert ids == [3, 14, 1, 0, 0, 0]  # words, </s>, padding
    # the weights are the saved ones (strict load), not a fresh random init
    saved = load_file(str(tiny_root / hub.TINY_VERSION / "transformer" / "diffusion_pytorch_model.safetensors"))
    k = "vace_patch_embedding.weight"
    assert torch.equal(comps.transformer.state_dict()[k], saved[k])


def test_tiny_depth_component(tiny_root):
    import mirage.depth as depth

    assert (tiny_root / hub.TINY_VERSION / "depth" / "config.json").is_file()  # build_tiny always builds it
    comps = hub.load_components("tiny", tiny_root=tiny_root, dtype=torch.float32, need_denoiser=False)
    assert comps.resolved["depth"].local and comps.depth is not None
    assert comps.depth() is comps.depth() and hasattr(depth, "load_depth_model")


def test_preview_has_no_denoiser():
    with pytest.raises(ModelError, match="preset preview: has no denoiser"):
        hub.load_components("preview", need_denoiser=True)


def test_unknown_override_key(tiny_root):
    with pytest.raises(InputError, match="unknown component 'unet'"):
        hub.load_components("tiny", tiny_root=tiny_root, overrides={"unet": "x/y"})
    with pytest.raises(InputError, match="not an existing folder nor a Hub id"):
        hub.load_components("tiny", tiny_root=tiny_root, overrides={"vae": "./no/such/folder"})


def _copy_vae(tiny_root, dst):
    shutil.copytree(tiny_root / hub.TINY_VERSION / "vae", dst)
    return dst / "diffusion_pytorch_model.safetensors"


def test_missing_weight_key_is_an_error(tiny_root, tmp_path):
    f = _copy_vae(tiny_root, tmp_path / "vae")
    sd = load_file(str(f))
    dropped = sorted(sd)[0]
    del sd[dropped]
    save_file(sd, str(f))
    with pytest.raises(ModelError, match=f"1 missing \\({dropped}\\)"):
        hub.load_components("tiny", tiny_root=tiny_root, overrides={"vae": str(tmp_path / "vae")}, need_denoiser=False, need_depth=False)


def test_extra_or_misshaped_weight_is_an_error(tiny_root, tmp_path):
    f = _copy_vae(tiny_root, tmp_path / "vae")
    sd = load_file(str(f))
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, str(f))
    with pytest.raises(ModelError, match="1 unexpected \\(extra.weight\\)"):
        load_vae(tmp_path / "vae")
    del sd["extra.weight"]
    k = "quant_conv.bias"
    sd[k] = torch.zeros(sd[k].numel() + 1)
    save_file(sd, str(f))
    with pytest.raises(ModelError, match=r"1 mis-shaped \(quant_conv.bias \(33,\) vs \(32,\)\)"):
        load_vae(tmp_path / "vae")


def test_pickle_only_folder_is_refused(tiny_root, tmp_path):
    f = _copy_vae(tiny_root, tmp_path / "vae")
    torch.save(load_file(str(f)), tmp_path / "vae" / "diffusion_pytorch_model.bin")
    f.unlink()
    with pytest.raises(ModelError, match="holds only diffusion_pytorch_model.bin; mirage loads safetensors only"):
        hub.load_components("tiny", tiny_root=tiny_root, overrides={"vae": str(tmp_path / "vae")}, need_denoiser=False, need_depth=False)


def test_pipeline_folder_override_uses_subfolder(tiny_root, tmp_path):
    _copy_vae(tiny_root, tmp_path / "pipe" / "vae")
    comps = hub.load_components(
        "tiny", tiny_root=tiny_root, overrides={"vae": str(tmp_path / "pipe")}, need_denoiser=False, need_depth=False
    )
    assert comps.resolved["vae"].subfolder == "vae" and comps.vae.kind is VaeKind.WAN
    src = hub.parse_override(hub.Component.VAE, str(tmp_path / "pipe"), "vae")
    assert src.local and src.subfolder == "vae"
    hubsrc = hub.parse_override(hub.Component.VAE, "Wan-AI/Wan2.1-VACE-14B-diffusers@abc123:vae", "vae")
    assert (hubsrc.source, hubsrc.revision, hubsrc.subfolder, hubsrc.local) == ("Wan-AI/Wan2.1-VACE-14B-diffusers", "abc123", "vae", False)


def test_offline_uncached_hub_model_is_one_line_error(no_hf_cache):
    with pytest.raises(ModelError) as info:
        hub.load_components("wan-vace-1.3b", need_depth=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "Wan-AI/Wan2.1-VACE-1.3B-diffusers@main file vae/config.json" in msg
    assert "`mirage download wan-vace-1.3b`" in msg and "--vae PATH" in msg
    with pytest.raises(ModelError, match="vae: madebyollin/taesd@main file config.json .*HF_HUB_OFFLINE=1"):
        load_vae("madebyollin/taesd")


def test_cached_reports_components(tiny_root, no_hf_cache, monkeypatch):
    got = hub.cached("wan-vace-1.3b")
    assert {"vae", "transformer", "text_encoder", "tokenizer", "scheduler"} <= set(got) and not any(got.values())
    monkeypatch.setenv("MIRAGE_CACHE", str(tiny_root))
    got = hub.cached("tiny")
    assert all(got[k] for k in ("vae", "transformer", "text_encoder", "tokenizer", "scheduler"))


def test_prompt_cache_skips_the_encoder(tiny_root, tmp_path):
    comps = hub.load_components("tiny", tiny_root=tiny_root, dtype=torch.float32, need_depth=False)
    calls = []

    def loader():
        calls.append(1)
        return comps.text_encoder()

    te_src = comps.resolved["text_encoder"]
    cache = PromptCache(tmp_path, te_src.source, te_src.revision)
    first = cache.encode(["a room", "", "a room"], loader, comps.tokenizer, max_len=8)
    assert len(calls) == 1 and len(list((tmp_path / "prompts").glob("*.safetensors"))) == 2
    direct = encode_prompt(comps.text_encoder, comps.tokenizer(), "a room", 8)
    torch.testing.assert_close(first[0], direct)
    torch.testing.assert_close(first[0], first[2])
    assert first[1].shape == (8, hub.TINY_TEXT_DIM) and not torch.equal(first[0], first[1])
    again = cache.encode(["a  room ", ""], loader, comps.tokenizer, max_len=8)  # same after cleaning
    assert len(calls) == 1
    torch.testing.assert_close(again[0], direct, rtol=0, atol=0)
    cache.encode(["a room"], loader, comps.tokenizer, max_len=12)  # another key
    assert len(calls) == 2
    other = PromptCache(tmp_path, te_src.source, "other-revision")
    assert other.get("a room", 8, torch.float32) is None


def test_download_offline_is_a_model_error(no_hf_cache):
    seen = []
    with pytest.raises(ModelError, match=r"vae: Wan-AI/Wan2.1-VACE-1.3B-diffusers@main file vae/\*.json.*mirage download wan-vace-1.3b"):
        hub.download("wan-vace-1.3b", progress=lambda c, i, n: seen.append((c, i)))
    assert seen == [("vae", 0)]


@pytest.mark.parametrize("preset", ["wan-vace-14b", "wan-vace-1.3b"])
def test_download_fetches_the_presets_distilled_lora(preset, tmp_path, monkeypatch):
    """``mirage download`` asks huggingface_hub for every Hub component and, for the 14B preset, the step-distilled
    LoRA's file at its pinned revision, so that --distilled works offline afterwards (the Hub replaced by recorders)."""
    import huggingface_hub
    from huggingface_hub import constants

    snapshots, files, seen = [], [], []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        snapshots.append((repo_id, revision))
        return str(tmp_path / repo_id.replace("/", "--"))

    def hf_hub_download(repo_id, filename, revision=None, **kw):
        files.append((repo_id, filename, revision))
        return str(tmp_path / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    out = hub.download(preset, progress=lambda c, i, n: seen.append(c))
    lora = hub.PRESETS[hub.Preset(preset)].distill_lora
    assert {r for r, _ in snapshots} == {c.repo_id for c in hub.preset_components(preset)
                                         if c.kind is hub.SourceKind.HUB}
    if lora is None:
        assert files == [] and "distill_lora" not in out and "distill_lora" not in seen
    else:
        assert files == [(lora.repo_id, lora.filename, lora.revision)]
        assert lora.repo_id == "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
        assert out["distill_lora"] == tmp_path / lora.filename and "distill_lora" in seen


def test_build_tiny_rebuilds_an_incomplete_component(tmp_path):
    """A component folder without its files (left by an older mirage whose other torchrun rank saved nothing)
    is rebuilt, not loaded into a confusing 'no config.json' error."""
    root = tmp_path / "cache"
    base = hub.build_tiny(root)
    (base / "depth" / "config.json").unlink()
    (base / "text_encoder" / "model.safetensors").unlink()
    hub.build_tiny(root)
    assert (base / "depth" / "config.json").is_file() and (base / "text_encoder" / "model.safetensors").is_file()
    assert not list(base.glob(".*.part-*"))


def test_build_tiny_other_ranks_wait_for_rank_0(tmp_path, monkeypatch):
    """Under torchrun only rank 0 builds (transformers' save_pretrained writes nothing on other ranks); the others
    wait for its complete folders, and name what is missing if it never comes."""
    root = tmp_path / "cache"
    monkeypatch.setattr(hub_tiny, "_dist_rank", lambda: 1)
    monkeypatch.setattr(hub_tiny, "TINY_WAIT_S", 0.3)
    with pytest.raises(ModelError, match=r"tiny preset: rank 1 waited 0 s for rank 0 to build vae, transformer"):
        hub.build_tiny(root)
    assert not (hub.tiny_dir(root) / "vae").exists()  # rank 1 built nothing itself
    monkeypatch.setattr(hub_tiny, "_dist_rank", lambda: 0)
    hub.build_tiny(root)  # rank 0's build ...
    monkeypatch.setattr(hub_tiny, "_dist_rank", lambda: 1)
    assert hub.build_tiny(root) == hub.tiny_dir(root)  # ... is what rank 1 then finds at once

