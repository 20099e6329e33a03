"""The ``tiny`` preset: tiny random models (fixed seeds) built locally on first use under ``$MIRAGE_CACHE/tiny-v2``
and then loaded back through the same loaders as any other preset; tests and CPU smoke runs use it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mirage.errors import ModelError
from mirage.hub.loaders import quiet
from mirage.hub.sources import cache_dir, tiny_dir
from mirage.io import atomic_write_text

logger = logging.getLogger("mirage")

TINY_TEXT_DIM = 32  # UMT5 d_model == transformer text_dim
TINY_WORDS = (
    "a the of and in on with at to from by room house street forest sea sky tree trees wall floor window door "
    "light dark bright camera moves forward left right up down slowly scene photo view interior exterior wooden "
    "stone white black red green blue grey sofa table chair lamp ruin water sand grass road car building city"
).split()


def _tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in TINY_WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _tiny_builders(seed: int) -> dict[str, Callable[[Path], None]]:
    def vae(out: Path) -> None:
        from diffusers import AutoencoderKLWan

        torch.manual_seed(seed)
        AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).save_pretrained(out, safe_serialization=True)

    def transformer(out: Path) -> None:
        from diffusers import WanVACETransformer3DModel

        torch.manual_seed(seed + 1)
        WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=TINY_TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0], vace_in_channels=96,
        ).save_pretrained(out, safe_serialization=True)

    def text_encoder(out: Path) -> None:
        from transformers import UMT5Config, UMT5EncoderModel

        torch.manual_seed(seed + 2)
        cfg = UMT5Config(
            vocab_size=len(TINY_WORDS) + 3, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
        UMT5EncoderModel(cfg).eval().save_pretrained(out, safe_serialization=True)

    def tokenizer(out: Path) -> None:
        _tiny_tokenizer().save_pretrained(out)

    def scheduler(out: Path) -> None:
        from diffusers import UniPCMultistepScheduler

        # the real Wan 2.1 VACE scheduler config (flow matching, shift 3)
        UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000,
            solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
        ).save_pretrained(out)

    def depth(out: Path) -> None:
        from mirage.depth import build_tiny_depth_model

        build_tiny_depth_model(out, seed=seed + 3)

    return {"vae": vae, "transformer": transformer, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler, "depth": depth}


#: Files each tiny component must hold to be complete (a folder without them is rebuilt).
_TINY_FILES = {
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "transformer": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors"),
    "tokenizer": ("tokenizer.json",),
    "scheduler": ("scheduler_config.json",),
    "depth": ("config.json", "model.safetensors", "preprocessor_config.json"),
}


def _tiny_complete(name: str, folder: Path) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in _TINY_FILES[name])


def _dist_rank() -> int:
    """This process's rank when torch.distributed is initialised (torchrun), else 0."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


#: How long torchrun ranks other than 0 wait for rank 0 to build the tiny preset.
TINY_WAIT_S = 600.0


def _wait_for_tiny(base: Path, builders: dict) -> None:
    """Wait (polling) until rank 0 has built every tiny component; ModelError naming the missing ones on timeout."""
    timeout_s = TINY_WAIT_S
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [n for n in builders if not _tiny_complete(n, base / n)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ModelError(f"tiny preset: rank {_dist_rank()} waited {timeout_s:.0f} s for rank 0 to build "
                             f"{', '.join(missing)} under {base}",
                             hint="check rank 0's log, or run one tiny render in a single process first")
        time.sleep(0.5)


def build_tiny(root: Path | None = None, *, seed: int = 0) -> Path:
    """Build the tiny preset's missing components under ``<root>/tiny-v2/<component>`` (idempotent).

    Each component is written with ``save_pretrained`` into a temporary folder that is renamed when complete, so
    an interrupted build never leaves a half-written component. The RNG state of the caller is not touched.
    Inside a torch.distributed group only rank 0 builds and the other ranks wait for its complete folders.

    Args:
        root: cache root (default :func:`cache_dir`).
        seed: base seed of the random weights.

    Returns:
        the ``tiny-v2`` folder.
    """
    base = tiny_dir(root if root is not None else cache_dir())
    base.mkdir(parents=True, exist_ok=True)
    builders = _tiny_builders(seed)
    if _dist_rank() != 0:
        # under torchrun only rank 0 builds: transformers' save_pretrained writes nothing on other ranks
        _wait_for_tiny(base, builders)
        return base
    for name, build in builders.items():
        final = base / name
        if _tiny_complete(name, final):
            continue
        if final.exists():  # left incomplete (an older mirage): rebuild it
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.part-", dir=base))
        try:
            with torch.random.fork_rng(devices=[]), quiet():
                build(tmp)
            if not _tiny_complete(name, tmp):
                raise ModelError(f"tiny preset: building {name} wrote {sorted(p.name for p in tmp.iterdir())}, "
                                 f"not {list(_TINY_FILES[name])}", hint="report this; delete " + str(base))
            try:
                os.replace(tmp, final)
            except OSError:
                if not _tiny_complete(name, final):  # lost a race with another process: theirs is as good as ours
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("tiny preset: built %s", final)
    readme = base / "README.txt"
    if not readme.exists():
        atomic_write_text(readme, "Tiny random models built by mirage.hub.build_tiny (seeded). Safe to delete.\n"
                          + json.dumps({"seed": seed}) + "\n")
    return base
