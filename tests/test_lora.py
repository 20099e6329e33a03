"""LoRAs (mirage.hub.lora): tiny LoRAs in each key format of ../shared/hub/LORA_KEYS.md fused into the tiny
transformer through diffusers' loader and compared with the same low-rank delta applied by hand; strictness;
one-line errors; the distilled profile; the CLI's --lora / --distilled."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from _cli import run_main  # tests/_cli.py
from safetensors.torch import save_file

from mirage import hub
from mirage.config import DenoiserKind, profile_warning
from mirage.errors import InputError, ModelError
from mirage.hub.lora import LoraSpec, distill_lora, fuse_lora, lora_file, parse_lora
from mirage.sampling import SamplingProfile, resolve_sampling

RANK = 4
#: original Wan module name -> diffusers module name (LORA_KEYS.md, "What diffusers turns them into")
ORIGINAL_TO_DIFFUSERS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v", "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirage-cache")
    hub.build_tiny(root)
    return root


@pytest.fixture(scope="module")
def base(tiny_root):
    """The tiny preset's transformer, loaded once through the real loading path (tests fuse into copies)."""
    comps = hub.load_components("tiny", tiny_root=tiny_root, dtype=torch.float32, need_depth=False)
    return comps.transformer


def _pair(module: torch.nn.Linear, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(down/A (rank, in), up/B (out, rank)) random, for ``module``."""
    return (torch.randn(RANK, module.in_features, generator=gen), torch.randn(module.out_features, RANK, generator=gen))


def _layer(model, name: str) -> torch.nn.Linear:
    return dict(model.named_modules())[name]


def _write_original(base, path, *, down="lora_down", up="lora_up", alpha=2.0, with_bias=True, extra=None):
    """An original Wan / ComfyUI LoRA (``diffusion_model.blocks.{i}.self_attn.q.lora_down.weight`` ...) of every
    linear layer of both tiny blocks; returns {diffusers module: (delta W, delta b or None)} at scale 1."""
    gen = torch.Generator().manual_seed(7)
    sd, want = {}, {}
    for i in range(len(base.blocks)):
        for orig, ours in ORIGINAL_TO_DIFFUSERS.items():
            name = f"blocks.{i}.{ours}"
            a, b = _pair(_layer(base, name), gen)
            key = f"diffusion_model.blocks.{i}.{orig}"
            sd[f"{key}.{down}.weight"], sd[f"{key}.{up}.weight"] = a, b
            sd[f"{key}.alpha"] = torch.tensor(alpha)
            bias = torch.randn(b.shape[0], generator=gen) if with_bias else None
            if bias is not None:
                sd[f"{key}.diff_b"] = bias
            want[name] = (alpha / RANK * b @ a, bias)
    sd.update(extra or {})
    save_file(sd, str(path))
    return want


def _check_fused(base, fused, want, scale):
    """``fused`` == ``base`` + scale * delta on the LoRA's layers, bit-equal elsewhere, and plain nn.Linear again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    before, after = base.state_dict(), fused.state_dict()
    assert list(after) == list(before)  # no LoRA weights left behind
    assert not any(isinstance(m, BaseTunerLayer) for m in fused.modules())
    changed = set()
    for name, (dw, db) in want.items():
        layer = _layer(fused, name)
        assert type(layer) is torch.nn.Linear
        torch.testing.assert_close(layer.weight, before[f"{name}.weight"] + scale * dw, rtol=1e-5, atol=1e-5)
        changed.add(f"{name}.weight")
        if db is not None:
            torch.testing.assert_close(layer.bias, before[f"{name}.bias"] + scale * db, rtol=1e-5, atol=1e-5)
            changed.add(f"{name}.bias")
    assert max((after[k] - before[k]).abs().max().item() for k in changed) > 0.1  # the deltas are not negligible
    for k in set(before) - changed:
        assert torch.equal(after[k], before[k]), k


# ---------------------------------------------------------------------------------------------- each key format


def test_diffusers_peft_format(base, tmp_path):
    gen = torch.Generator().manual_seed(3)
    sd, want = {}, {}
    for name in ("blocks.0.attn1.to_q", "blocks.1.attn2.to_out.0", "blocks.1.ffn.net.0.proj"):
        a, b = _pair(_layer(base, name), gen)
        sd[f"transformer.{name}.lora_A.weight"], sd[f"transformer.{name}.lora_B.weight"] = a, b
        want[name] = (b @ a, None)  # PEFT without metadata: lora_alpha = rank, scaling 1
    path = tmp_path / "peft.safetensors"
    save_file(sd, str(path))
    fused = copy.deepcopy(base)
    rec = fuse_lora(fused, LoraSpec(str(path), 0.75))
    assert (rec.layers, rec.scale, rec.zero_deltas) == (3, 0.75, 0)
    _check_fused(base, fused, want, 0.75)


def test_peft_metadata_alpha_is_honoured(base, tmp_path):
    """A PEFT file's ``lora_adapter_metadata`` header (as diffusers' save_lora_adapter writes it): alpha/r = 2."""
    import json

    gen = torch.Generator().manual_seed(4)
    name = "blocks.0.ffn.net.2"
    a, b = _pair(_layer(base, name), gen)
    meta = {"r": RANK, "lora_alpha": 2 * RANK, "target_modules": ["ffn.net.2"]}  # targets blocks.1's too
    path = tmp_path / "meta.safetensors"
    save_file({f"transformer.{name}.lora_A.weight": a, f"transformer.{name}.lora_B.weight": b}, str(path),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
    fused = copy.deepcopy(base)
    fuse_lora(fused, LoraSpec(str(path)))
    _check_fused(base, fused, {name: (2.0 * b @ a, None)}, 1.0)


@pytest.mark.parametrize("down,up", [("lora_down", "lora_up"), ("lora_A", "lora_B")], ids=["down-up", "A-B"])
def test_original_wan_comfyui_format_with_alpha_and_diff_b(base, tmp_path, down, up):
    path = tmp_path / "wan.safetensors"
    want = _write_original(base, path, down=down, up=up, alpha=2.0)
    fused = copy.deepcopy(base)
    rec = fuse_lora(fused, LoraSpec(str(path), 1.5))
    assert rec.layers == len(want) == 20
    _check_fused(base, fused, want, 1.5)


#: The original format's top-level layers (LORA_KEYS.md) and where diffusers' converter puts them.
TOP_LEVEL_TO_DIFFUSERS = {
    "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
}


def test_original_format_top_level_layers_with_diff_b(base, tmp_path):
    gen = torch.Generator().manual_seed(11)
    extra, want = {}, {}
    for orig, ours in TOP_LEVEL_TO_DIFFUSERS.items():
        a, b = _pair(_layer(base, ours), gen)
        bias = torch.randn(b.shape[0], generator=gen)
        key = f"diffusion_model.{orig}"
        # no .alpha here: diffusers 0.42's converter folds it in for blocks.{i} only (a top-level one is left over,
        # which convert_lora reports as keys that match nothing, as in the next test)
        extra.update({f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b, f"{key}.diff_b": bias})
        want[ours] = (b @ a, bias)
    path = tmp_path / "top.safetensors"
    want.update(_write_original(base, path, extra=extra))
    fused = copy.deepcopy(base)
    rec = fuse_lora(fused, LoraSpec(str(path), 0.5))
    assert rec.layers == len(want) == 26
    _check_fused(base, fused, want, 0.5)


def test_original_format_keys_that_match_nothing_are_counted_and_shown(base, tmp_path):
    path = tmp_path / "bogus.safetensors"
    gen = torch.Generator().manual_seed(3)
    a, b = _pair(_layer(base, "blocks.0.attn1.to_q"), gen)
    _write_original(base, path, extra={"diffusion_model.blocks.0.bogus.lora_down.weight": a,
                                       "diffusion_model.blocks.0.bogus.lora_up.weight": b})
    fused = copy.deepcopy(base)
    with pytest.raises(ModelError) as e:
        fuse_lora(fused, LoraSpec(str(path)))
    msg = _one_line(e.value)
    n_keys = 20 * 4 + 2  # 20 layers with down, up, alpha and diff_b, and the bogus pair
    assert f"2 of {n_keys} keys match nothing diffusers' Wan LoRA conversion knows" in msg, msg
    assert "(e.g. diffusion_model.blocks.0.bogus.lora_" in msg and "nothing was applied" in msg
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in fused.state_dict().items())


def test_musubi_format(base, tmp_path):
    gen = torch.Generator().manual_seed(5)
    sd, want = {}, {}
    for i in range(len(base.blocks)):
        for orig, ours in ORIGINAL_TO_DIFFUSERS.items():
            name = f"blocks.{i}.{ours}"
            a, b = _pair(_layer(base, name), gen)
            key = f"lora_unet_blocks_{i}_{orig.replace('.', '_')}"
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = a, b
            sd[f"{key}.alpha"] = torch.tensor(8.0)
            want[name] = (8.0 / RANK * b @ a, None)
    path = tmp_path / "musubi.safetensors"
    save_file(sd, str(path))
    fused = copy.deepcopy(base)
    fuse_lora(fused, LoraSpec(str(path)))
    _check_fused(base, fused, want, 1.0)


def test_two_loras_add_up_in_order(base, tmp_path):
    p1, p2 = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    w1 = _write_original(base, p1, alpha=4.0)
    gen = torch.Generator().manual_seed(11)
    a, b = _pair(_layer(base, "blocks.0.attn1.to_q"), gen)
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": a, "transformer.blocks.0.attn1.to_q.lora_B.weight": b},
              str(p2))
    fused = copy.deepcopy(base)
    recs = hub.fuse_loras(fused, (LoraSpec(str(p1), 0.5), parse_lora(f"{p2}:2")))
    assert [r.scale for r in recs] == [0.5, 2.0]
    q = "blocks.0.attn1.to_q"
    torch.testing.assert_close(_layer(fused, q).weight,
                               base.state_dict()[f"{q}.weight"] + 0.5 * w1[q][0] + 2.0 * (b @ a), rtol=1e-5, atol=1e-5)


def test_load_components_fuses_before_returning(tiny_root, base, tmp_path):
    path = tmp_path / "wan.safetensors"
    want = _write_original(base, path, alpha=2.0)
    comps = hub.load_components("tiny", tiny_root=tiny_root, dtype=torch.float32, need_depth=False,
                                loras=(LoraSpec(str(path), 0.5),))
    assert [(r.source, r.layers) for r in comps.loras] == [(str(path), 20)]
    _check_fused(base, comps.transformer, want, 0.5)


def test_hub_lora_from_the_offline_cache(base, tmp_path, monkeypatch):
    """The 14B preset's distilled LoRA, by its real repo and file name, found in the local Hugging Face cache."""
    from hub_replica import RepoWriter, fake_commit  # tests/hub_replica.py
    from huggingface_hub import constants
    from safetensors.torch import save

    lo = hub.PRESETS[hub.Preset.WAN_VACE_14B].distill_lora
    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = torch.Generator().manual_seed(2)
    a, b = _pair(_layer(base, "blocks.1.attn1.to_v"), gen)
    data = save({"diffusion_model.blocks.1.self_attn.v.lora_A.weight": a,
                 "diffusion_model.blocks.1.self_attn.v.lora_B.weight": b})
    RepoWriter(cache, lo.repo_id, fake_commit(lo.repo_id)).write(lo.filename, data)
    spec = distill_lora("wan-vace-14b")
    assert spec.hub() == (lo.repo_id, "main", lo.filename)
    assert lora_file(spec).read_bytes() == data
    fused = copy.deepcopy(base)
    fuse_lora(fused, spec)
    _check_fused(base, fused, {"blocks.1.attn1.to_v": (b @ a, None)}, 1.0)


# ---------------------------------------------------------------------------------------------- strictness


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg
    return msg


def test_keys_that_match_nothing_are_an_error_and_nothing_is_applied(base, tmp_path):
    gen = torch.Generator().manual_seed(1)
    a, b = _pair(_layer(base, "blocks.0.attn1.to_q"), gen)
    sd = {"transformer.blocks.0.attn1.to_q.lora_A.weight": a, "transformer.blocks.0.attn1.to_q.lora_B.weight": b,
          "transformer.vace_blocks.7.proj_out.lora_A.weight": a.clone(),
          "transformer.vace_blocks.7.proj_out.lora_B.weight": b.clone()}
    path = tmp_path / "half.safetensors"
    save_file(sd, str(path))
    fused = copy.deepcopy(base)
    with pytest.raises(ModelError) as e:
        fuse_lora(fused, LoraSpec(str(path)))
    msg = _one_line(e.value)
    assert "2 of 4 weights match no linear layer" in msg and "transformer.vace_blocks.7.proj_out.lora_" in msg
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in fused.state_dict().items())


def test_lora_of_another_architecture(base, tmp_path):
    path = tmp_path / "flux.safetensors"
    save_file({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 3072),
               "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(3072, 4)}, str(path))
    with pytest.raises(ModelError, match=r"2 of 2 weights match no linear layer of WanVACETransformer3DModel"):
        fuse_lora(copy.deepcopy(base), LoraSpec(str(path)))


def test_lora_of_another_model_size_is_one_line(base, tmp_path):
    path = tmp_path / "14b.safetensors"  # the 14B's width (5120) on the tiny model (24)
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.ones(4, 5120),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.ones(5120, 4)}, str(path))
    with pytest.raises(ModelError) as e:
        fuse_lora(copy.deepcopy(base), LoraSpec(str(path)))
    msg = _one_line(e.value)
    assert "made for a model of another size" in msg and "(4, 5120)" in msg and "(rank, 24)" in msg


def test_non_zero_delta_diffusers_drops_is_an_error_zero_one_is_not(base, tmp_path):
    zero, nonzero = tmp_path / "zero.safetensors", tmp_path / "nonzero.safetensors"
    _write_original(base, zero, extra={"diffusion_model.blocks.0.norm3.diff": torch.zeros(24),
                                       "diffusion_model.blocks.1.diff_m": torch.zeros(1, 6, 24)})
    rec = fuse_lora(copy.deepcopy(base), LoraSpec(str(zero)))
    assert rec.zero_deltas == 2
    _write_original(base, nonzero, extra={"diffusion_model.blocks.1.diff_m": torch.full((1, 6, 24), 0.01)})
    fused = copy.deepcopy(base)
    with pytest.raises(ModelError) as e:
        fuse_lora(fused, LoraSpec(str(nonzero)))
    msg = _one_line(e.value)
    assert "1 non-zero weight delta(s)" in msg and "diffusion_model.blocks.1.diff_m" in msg
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in fused.state_dict().items())


def test_unconvertible_keys_are_one_line(base, tmp_path):
    path = tmp_path / "bad.safetensors"  # musubi keys without their alpha: diffusers' converter raises KeyError
    save_file({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.ones(4, 24),
               "lora_unet_blocks_0_self_attn_q.lora_up.weight": torch.ones(24, 4)}, str(path))
    with pytest.raises(ModelError, match="diffusers cannot convert its keys") as e:
        fuse_lora(copy.deepcopy(base), LoraSpec(str(path)))
    _one_line(e.value)


def test_corrupt_file_is_one_line(base, tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError, match="unreadable safetensors file") as e:
        fuse_lora(copy.deepcopy(base), LoraSpec(str(path)))
    _one_line(e.value)


def test_missing_file_and_uncached_hub_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(InputError, match=r"--lora .*nope.safetensors: no such file"):
        hub.fuse_loras(torch.nn.Linear(2, 2), (LoraSpec(str(tmp_path / "nope.safetensors")),))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        lora_file(parse_lora("someone/loras@v2:dir/x.safetensors:0.5"))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("lora: someone/loras@v2 file dir/x.safetensors is not in the local Hugging Face cache")
    assert "hf download someone/loras dir/x.safetensors --revision v2" in msg


@pytest.mark.parametrize("case", ["uncached_hub_file", "truncated_file", "no_tensors"])
def test_a_lora_that_cannot_be_read_fails_before_any_model_loads(case, base, tiny_root, tmp_path, monkeypatch):
    from huggingface_hub import constants

    import mirage.hub.components as components

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_load(*a, **k):
        raise AssertionError("a model loaded before the LoRA was found and read")

    monkeypatch.setattr(components, "load_diffusers", no_load)
    path = tmp_path / "lora.safetensors"
    if case == "uncached_hub_file":
        spec, match = parse_lora("someone/x:f.safetensors"), r"lora: someone/x@main file f.safetensors is not in the local"
    elif case == "truncated_file":  # a download cut short: the header's offsets run past the end of the file
        _write_original(base, path)
        path.write_bytes(path.read_bytes()[:-100])
        spec, match = LoraSpec(str(path)), r"lora .*lora.safetensors: unreadable safetensors file, truncated or corrupt"
    else:
        save_file({}, str(path))
        spec, match = LoraSpec(str(path)), r"lora .*lora.safetensors: the file holds no tensors"
    with pytest.raises(ModelError, match=match) as e:
        hub.load_components("tiny", tiny_root=tiny_root, need_depth=False, loras=(spec,))
    _one_line(e.value)


def test_a_random_weight_benchmark_reads_its_loras_before_building_the_models(tmp_path, monkeypatch):
    import mirage.random_weights as rw
    from mirage.bench import BenchConfig, build_pipeline
    from mirage.config import PipelineConfig

    path = tmp_path / "cut.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 1536)}, str(path))
    path.write_bytes(path.read_bytes()[:-64])
    monkeypatch.setattr(rw, "random_components", lambda *a, **k: pytest.fail("the models were built first"))
    with pytest.raises(ModelError, match=r"lora .*cut.safetensors: unreadable safetensors file") as e:
        build_pipeline(BenchConfig(PipelineConfig(loras=(LoraSpec(str(path)),)), random_weights=True))
    _one_line(e.value)


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,source,scale,where", [
    ("a/b.safetensors", "a/b.safetensors", 1.0, ("a/b.safetensors", "main", None)),
    ("/x/y.safetensors:0.8", "/x/y.safetensors", 0.8, None),
    ("owner/name:dir/f.safetensors", "owner/name:dir/f.safetensors", 1.0, ("owner/name", "main", "dir/f.safetensors")),
    ("owner/name@v1.0:f.safetensors:-1.5", "owner/name@v1.0:f.safetensors", -1.5, ("owner/name", "v1.0", "f.safetensors")),
    ("o/n@refs/pr/1:f.safetensors:2", "o/n@refs/pr/1:f.safetensors", 2.0, ("o/n", "refs/pr/1", "f.safetensors")),
])
def test_parse_lora(text, source, scale, where):
    spec = parse_lora(text)
    assert (spec.source, spec.scale) == (source, scale)
    if where is None or where[2] is None:
        assert spec.hub() is None  # a path, not owner/name:file
    else:
        assert spec.hub() == where


def test_existing_local_file_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "name:f.safetensors").write_bytes(b"")
    assert parse_lora("owner/name:f.safetensors").hub() is None


@pytest.mark.parametrize("text,match", [
    ("x.safetensors:strong", r"--lora x.safetensors:strong: 'strong' is not a scale"),
    ("x.bin", r"--lora x.bin: mirage loads .safetensors LoRAs only"),
    ("owner/name:x.ckpt:0.5", r"safetensors LoRAs only"),
    ("x.safetensors:nan", r"scale nan is not a finite number"),
    ("x.safetensors:", r"--lora x.safetensors:: no scale after the last ':'; pass x.safetensors, or x.safetensors:SCALE"),
    ("owner/name", r"--lora owner/name: not a .safetensors file, and a Hub LoRA needs its file; pass "
                   r"owner/name:path/in/repo.safetensors \(see the repo's files\), or a local .safetensors file"),
    ("owner/name@v2:", r"--lora owner/name@v2:: .* pass owner/name@v2:path/in/repo.safetensors "),
    ("owner/name:0.8", r"--lora owner/name: .* pass owner/name:path/in/repo.safetensors:0.8 "),
    ("lightx2v/Wan2.1-Distill-Loras", r"a Hub LoRA needs its file; pass lightx2v/Wan2.1-Distill-Loras:path/in/"),
    ("loras/x.pt", r"--lora loras/x.pt: mirage loads .safetensors LoRAs only"),
    ("loras/x.gguf", r"--lora loras/x.gguf: mirage loads .safetensors LoRAs only"),
    ("loras/x.safetensors.bak", r"--lora loras/x.safetensors.bak: mirage loads .safetensors LoRAs only"),
])
def test_parse_lora_errors(text, match):
    with pytest.raises(InputError, match=match) as e:
        parse_lora(text)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- the distilled profile


def test_distilled_profile_settings():
    s = resolve_sampling(SamplingProfile.DISTILLED, 832, 480)
    assert (s.steps, s.guidance, s.flow_shift, s.negative_prompt, s.flow_shift_source) == (4, 1.0, 5.0, "",
                                                                                           "distilled LoRA")
    s = resolve_sampling(SamplingProfile.DISTILLED, 1280, 720, steps=8, flow_shift=3.0)  # explicit values win
    assert (s.steps, s.guidance, s.flow_shift) == (8, 1.0, 3.0)


@pytest.mark.parametrize("config,options,words", [
    (dict(preset="wan-vace-14b", distill=True), dict(), ["step-distilled LoRA is fused", "50 steps and guidance 5",
                                                         "standard profile", "profile=SamplingProfile.DISTILLED"]),
    (dict(preset="wan-vace-14b", distill=True), dict(profile=SamplingProfile.FAST), ["with 20 steps from the fast"]),
    (dict(preset="wan-vace-14b", distill=True), dict(steps=4), ["with guidance 5 from the standard profile"]),
    (dict(), dict(profile=SamplingProfile.DISTILLED), ["no step-distilled LoRA fused", "PipelineConfig(distill=True)"]),
    (dict(preset="wan-vace-14b", distill=True), dict(profile=SamplingProfile.DISTILLED), None),
    (dict(preset="wan-vace-14b", distill=True), dict(profile=SamplingProfile.FAST, steps=4), None),  # fits: no CFG
    (dict(loras=(LoraSpec("mine.safetensors"),)), dict(profile=SamplingProfile.DISTILLED), None),  # the user's own
    (dict(preset="wan-vace-14b", distill=True), dict(steps=30, guidance=5.0), None),  # given: the user chose them
    (dict(denoiser=DenoiserKind.NONE), dict(profile=SamplingProfile.DISTILLED), None),  # the preview samples nothing
    (dict(), dict(), None),
])
def test_a_render_whose_sampling_does_not_fit_the_fused_loras_is_warned(config, options, words):
    from mirage.config import PipelineConfig, RenderOptions

    o = RenderOptions(**options)
    s = resolve_sampling(o.profile, 832, 480, steps=o.steps, guidance=o.guidance)
    msg = profile_warning(PipelineConfig(**config), o, s)
    if words is None:
        assert msg is None
    else:
        assert msg is not None and "\n" not in msg and all(w in msg for w in words), msg


def test_the_profile_warning_reaches_the_plan_the_log_and_a_batchs_reports(caplog, tmp_path):
    import json

    from PIL import Image

    import mirage.batch as mb
    from mirage.config import PipelineConfig, RenderOptions
    from mirage.inputs import TrajectoryOptions, check_input, with_profile_warning
    from mirage.pipeline import Pipeline

    hub.build_tiny()
    pipe = Pipeline(PipelineConfig(preset="tiny", device="cpu"))
    distilled = RenderOptions(profile=SamplingProfile.DISTILLED, size=(64, 48), chunk_frames=5)
    with caplog.at_level("WARNING", logger="mirage"):
        plan = pipe.check_input(torch.zeros(3, 48, 64), "orbit", distilled)
    assert any("no step-distilled LoRA fused" in w for w in plan.warnings), plan.warnings
    assert "no step-distilled LoRA fused" in caplog.text
    assert not any("LoRA" in w for w in pipe.check_input(torch.zeros(3, 48, 64), "orbit",
                                                          RenderOptions(size=(64, 48))).warnings)
    # a plan made by the module's check_input gets it from render, once; a plan that holds it keeps its one copy
    bare = check_input(torch.zeros(3, 48, 64), TrajectoryOptions("orbit", frames=5), distilled, preset="tiny")
    assert not any("LoRA fused" in w for w in bare.warnings)
    assert sum("no step-distilled LoRA fused" in w for w in pipe.render(bare, options=distilled).report.warnings) == 1
    held = with_profile_warning(bare, pipe.config, distilled, log=False)
    assert with_profile_warning(held, pipe.config, distilled) is held
    # a batch (what `mirage render DIR/` runs) checks its inputs itself: the warning is logged once and reaches
    # every report once
    (tmp_path / "in").mkdir()
    for n in "ab":
        Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp_path / "in" / f"{n}.png")
    caplog.clear()
    with caplog.at_level("WARNING", logger="mirage"):
        res = mb.render([tmp_path / "in"], TrajectoryOptions("orbit", frames=5),
                        mb.OutputRequest(out_dir=tmp_path / "out"), pipeline=pipe, options=distilled)
    assert [i.status for i in res.items] == ["done", "done"]
    assert caplog.text.count("no step-distilled LoRA fused") == 1, caplog.text
    for n in "ab":
        warnings = json.loads((tmp_path / "out" / f"{n}.json").read_text())["warnings"]
        assert sum("no step-distilled LoRA fused" in w for w in warnings) == 1, warnings


def test_presets_name_the_real_lightx2v_file(shared):
    import csv

    rows = {r["path"]: r for r in csv.DictReader(
        open(shared("hub", "lightx2v--Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v", "FILES.tsv")), delimiter="\t")}
    lo = hub.PRESETS[hub.Preset.WAN_VACE_14B].distill_lora
    assert lo.repo_id == "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
    assert lo.filename in rows and int(rows[lo.filename]["size_bytes"]) == lo.size_bytes
    assert hub.PRESETS[hub.Preset.WAN_VACE_1_3B].distill_lora is None
    infos = {i.name: i for i in hub.list_presets()}
    assert infos["wan-vace-14b"].distill_lora is lo
    assert infos["wan-vace-14b"].download_bytes == sum(
        c.size_bytes for c in infos["wan-vace-14b"].components) + lo.size_bytes


def test_distilled_refuses_a_preset_without_a_lora():
    from mirage.config import DenoiserKind, PipelineConfig, check_pipeline_config

    with pytest.raises(InputError) as e:
        check_pipeline_config(PipelineConfig(preset="wan-vace-1.3b", distill=True))
    msg = str(e.value)
    assert "\n" not in msg and "preset wan-vace-1.3b has no step-distilled LoRA" in msg and "wan-vace-14b" in msg
    c = PipelineConfig(preset="wan-vace-14b", distill=True, loras=(LoraSpec("o/n:s.safetensors", 0.5),))
    check_pipeline_config(c)
    assert [s.source for s in c.fused_loras] == ["o/n:s.safetensors",
                                                 hub.PRESETS[hub.Preset.WAN_VACE_14B].distill_lora.source]
    with pytest.raises(InputError, match="--denoiser none has none"):
        check_pipeline_config(PipelineConfig(preset="tiny", denoiser=DenoiserKind.NONE,
                                             loras=(LoraSpec("o/n:s.safetensors"),)))


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def captured_render(monkeypatch):
    """Replace the library's batch render: the CLI test checks what reaches it."""
    import mirage.batch

    seen = {}

    def fake_render(images, traj, req, config, options, **kw):
        seen["config"], seen["options"] = config, options
        return types.SimpleNamespace(items=[], failed=[])

    monkeypatch.setattr(mirage.batch, "render", fake_render)
    return seen


def test_cli_passes_lora_and_distilled_through(captured_render, tmp_path, monkeypatch, capsys):
    f = tmp_path / "style.safetensors"
    f.write_bytes(b"")
    code, _, err = run_main(monkeypatch, capsys, "render", tmp_path / "img.png", "-t", "orbit", "-o", tmp_path / "o.mp4",
                            "--preset", "wan-vace-14b", "--distilled", "--lora", f"{f}:0.7",
                            "--lora", "owner/name@v1:loras/x.safetensors")
    assert code == 0, err
    c = captured_render["config"]
    assert captured_render["options"].profile is SamplingProfile.DISTILLED and c.distill
    assert c.loras == (LoraSpec(str(f), 0.7), LoraSpec("owner/name@v1:loras/x.safetensors", 1.0))


@pytest.mark.parametrize("args,words", [
    (["--lora", "x.bin"], ["--lora x.bin", ".safetensors LoRAs only"]),
    (["--lora", "x.safetensors:max"], ["'max' is not a scale"]),
    (["--fast", "--distilled"], ["--fast and --distilled"]),
])
def test_cli_bad_lora_options(captured_render, tmp_path, monkeypatch, capsys, args, words):
    code, _, err = run_main(monkeypatch, capsys, "render", tmp_path / "img.png", "-t", "orbit", "-o",
                            tmp_path / "o.mp4", *args)
    assert code == 2 and "config" not in captured_render
    line = next(x for x in err.splitlines() if "error:" in x)
    assert all(w in line for w in words), err


def test_cli_render_with_a_lora_end_to_end(tiny_root, base, tmp_path, monkeypatch, capsys):
    """The tiny preset rendered twice on the CPU, without and with a LoRA: the LoRA reaches the transformer (other
    frames) and the report records it."""
    import json

    import numpy as np
    from PIL import Image

    from mirage.hub import TINY_VERSION

    monkeypatch.setenv("MIRAGE_CACHE", str(tiny_root))
    assert (tiny_root / TINY_VERSION / "transformer").is_dir()
    path = tmp_path / "wan.safetensors"
    _write_original(base, path, alpha=4.0)
    room = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "room" / "image.png"
    common = ["render", room, "-t", "orbit", "--frames", "5", "--preset", "tiny", "--device", "cpu", "--size", "64x48",
              "--chunk-frames", "5", "--steps", "2", "-q"]
    frames = {}
    for name, extra in (("plain", []), ("lora", ["--lora", f"{path}:0.5"])):
        out = tmp_path / name / "v.mp4"
        code, _, err = run_main(monkeypatch, capsys, *common, "-o", out, "--frames-dir", tmp_path / name / "f", *extra)
        assert code == 0, err
        frames[name] = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name / "f").glob("*.png"))])
        report = json.loads(out.with_suffix(".json").read_text())
    assert report["settings"]["loras"] == [{"source": str(path), "scale": 0.5}]
    assert report["models"]["lora_0"] == {"id": str(path), "revision": None, "local": True,
                                          "class": "LoRA fused at scale 0.5 into 20 layers"}
    assert frames["plain"].shape == frames["lora"].shape == (5, 48, 64, 3)
    diff = np.abs(frames["plain"][1:].astype(int) - frames["lora"][1:].astype(int))  # frame 0 is the input image
    assert diff.mean() > 0.2 and diff.max() >= 3  # deterministic renders (same seed): only the LoRA differs


def test_cli_bench_passes_lora_through(monkeypatch, capsys, tmp_path):
    import mirage.bench as bench_mod

    got = {}

    def fake_run_bench(cfg, **kw):
        got["cfg"] = cfg
        raise InputError("recorded")  # stop before anything is built

    f = tmp_path / "x.safetensors"
    f.write_bytes(b"")
    monkeypatch.setattr(bench_mod, "run_bench", fake_run_bench)
    run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--lora", f"{f}:0.25")
    assert got["cfg"].config.loras == (LoraSpec(str(f), 0.25),)
    run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--preset", "wan-vace-14b", "--distilled", "--steps", "4")
    assert got["cfg"].config.distill and got["cfg"].options.profile is SamplingProfile.DISTILLED
    code, _, err = run_main(monkeypatch, capsys, "bench", "--device", "cpu", "--distilled")  # tiny: no LoRA named
    assert code == 2 and "--distilled: preset tiny has no step-distilled LoRA" in err
