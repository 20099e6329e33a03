"""Prompt embeddings (UMT5, as WanVACEPipeline computes them) and their on-disk cache.

The text encoder (UMT5-XXL, ~11 GB in bf16) is the largest single component; mirage never keeps it resident next
to the transformer. :class:`PromptCache` stores every embedding as a small safetensors file under the cache dir,
keyed by (text-encoder id, revision, encoder dtype, prompt, max_len), so a repeated run never loads the encoder;
on a miss the encoder is loaded, used for all missing prompts at once, and freed.

Prompt cleaning: diffusers' ``prompt_clean`` calls ``ftfy.fix_text`` (and raises NameError when ftfy is not
installed), then unescapes HTML twice and collapses whitespace. mirage does the same minus ftfy: HTML unescape
(twice), collapse runs of whitespace to one space, strip. For ordinary prompts (no mojibake) the tokens are
identical.
"""

from __future__ import annotations

import gc
import hashlib
import html
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mirage.errors import InputError, MemoryFileError
from mirage.io import atomic_path

logger = logging.getLogger("mirage")

DEFAULT_MAX_LEN = 512  # WanVACEPipeline's max_sequence_length default
PROMPT_CACHE_VERSION = 1


def clean_prompt(text: str) -> str:
    """diffusers' ``prompt_clean`` without ftfy: HTML-unescape twice, collapse whitespace, strip."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()
def encode_prompt(
    text_encoder_loader: Callable[[], Any],
    tokenizer: Any,
    prompt: str | Sequence[str],
    max_len: int = DEFAULT_MAX_LEN,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Encode prompt(s) exactly as ``WanVACEPipeline._get_t5_prompt_embeds`` does (minus ftfy, see module doc).

    Pads/truncates to ``max_len`` tokens, runs UMT5 with the attention mask, and zeroes the embeddings past each
    prompt's real length. The encoder is loaded by ``text_encoder_loader()``, used once for all prompts, and freed.

    Args:
        text_encoder_loader: returns a UMT5EncoderModel (e.g. ``Components.text_encoder``).
        tokenizer: the matching tokenizer.
        prompt: one prompt, or several.
        max_len: token length L (512 for Wan).
        device, dtype: of the returned embeddings.

    Returns:
        (L, D) for one prompt, (N, L, D) for a sequence; D = the encoder's d_model (4096 for UMT5-XXL).
    """
    if max_len < 1:
        raise InputError(f"max_len: got {max_len}; need a positive token count (Wan uses 512)")
    single = isinstance(prompt, str)
    prompts = [clean_prompt(p) for p in ([prompt] if single else list(prompt))]
    if not prompts:
        raise InputError("prompt: got an empty list; pass at least one prompt (\"\" is allowed)")
    inputs = tokenizer(
        prompts, padding="max_length", max_length=max_len, truncation=True, add_special_tokens=True,
        return_attention_mask=True, return_tensors="pt",
    )
    ids, mask = inputs.input_ids, inputs.attention_mask  # (N, L)
    seq_lens = mask.gt(0).sum(dim=1).long()
    encoder = text_encoder_loader()
    try:
        model_device = next(encoder.parameters()).device
        hidden = encoder(ids.to(model_device), mask.to(model_device)).last_hidden_state  # (N, L, D)
        hidden = hidden.to(dtype=dtype, device=device)
    finally:
        _free(encoder)
        del encoder
    out = torch.stack([torch.cat([u[:v], u.new_zeros(max_len - int(v), u.size(1))]) for u, v in zip(hidden, seq_lens, strict=True)])
    return out[0] if single else out


def _free(model: Any) -> None:
    """Drop a model's weights now (and the CUDA cache), so the next stage has the memory."""
    try:
        on_cuda = next(model.parameters()).is_cuda
    except (StopIteration, AttributeError):
        on_cuda = False
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()


class PromptCache:
    """Prompt embeddings on disk: ``<root>/prompts/<sha256>.safetensors``.

    Args:
        root: cache root (``mirage.hub.cache_dir()``).
        model_id: text-encoder identity (Hub id or folder) — part of the key.
        revision: its revision (None for folders) — part of the key.
    """

    def __init__(self, root: str | Path, model_id: str, revision: str | None):
        self.folder = Path(root) / "prompts"
        self.model_id = model_id
        self.revision = revision

    def key(self, prompt: str, max_len: int, dtype: torch.dtype) -> str:
        """Hex key of one embedding: (model id, revision, encoder dtype, cleaned prompt, max_len)."""
        blob = json.dumps(
            [PROMPT_CACHE_VERSION, self.model_id, self.revision, str(dtype), clean_prompt(prompt), int(max_len)],
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, prompt: str, max_len: int, dtype: torch.dtype) -> Path:
        return self.folder / f"{self.key(prompt, max_len, dtype)}.safetensors"

    def get(self, prompt: str, max_len: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The cached (L, D) embedding (in ``dtype``, CPU), or None."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        p = self.path(prompt, max_len, dtype)
        if not p.is_file():
            return None
        try:
            t = load_file(str(p))["prompt_embeds"]
        except (SafetensorError, KeyError, OSError) as e:
            raise MemoryFileError(f"prompt cache {p}: unreadable ({e}); delete the file") from None
        if t.ndim != 2 or t.shape[0] != max_len:
            raise MemoryFileError(f"prompt cache {p}: shape {tuple(t.shape)}, expected ({max_len}, D); delete the file")
        return t.to(dtype)

    def put(self, prompt: str, max_len: int, dtype: torch.dtype, embeds: torch.Tensor) -> Path:
        """Store one (L, D) embedding (atomically)."""
        from safetensors.torch import save_file

        p = self.path(prompt, max_len, dtype)
        meta = {"model_id": self.model_id, "revision": str(self.revision), "max_len": str(max_len),
                "dtype": str(dtype), "prompt": clean_prompt(prompt)[:2000]}
        with atomic_path(p) as tmp:
            save_file({"prompt_embeds": embeds.detach().to("cpu").contiguous()}, str(tmp), metadata=meta)
        return p

    def encode(
        self,
        prompts: Sequence[str],
        text_encoder_loader: Callable[[], Any],
        tokenizer_loader: Callable[[], Any],
        *,
        max_len: int = DEFAULT_MAX_LEN,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> list[torch.Tensor]:
        """Embeddings of ``prompts`` from the cache; misses are encoded together (one encoder load) and stored.

        Args:
            prompts: prompts to embed (e.g. ``[prompt, negative_prompt]``).
            text_encoder_loader: loads the encoder (called only on a miss; the model is freed after use).
            tokenizer_loader: returns the tokenizer (called only on a miss).
            max_len, device, dtype: as :func:`encode_prompt`; ``dtype`` is also the encoder dtype in the key.

        Returns:
            one (L, D) tensor per prompt, on ``device`` in ``dtype``.
        """
        out: list[torch.Tensor | None] = [self.get(p, max_len, dtype) for p in prompts]
        missing = sorted({clean_prompt(p) for p, o in zip(prompts, out, strict=True) if o is None})
        if missing:
            logger.info("prompt cache: encoding %d prompt(s) with %s", len(missing), self.model_id)
            embeds = encode_prompt(text_encoder_loader, tokenizer_loader(), missing, max_len, "cpu", dtype)
            fresh = dict(zip(missing, embeds, strict=True))
            for p in missing:
                self.put(p, max_len, dtype, fresh[p])
            out = [o if o is not None else fresh[clean_prompt(p)] for p, o in zip(prompts, out, strict=True)]
        else:
            logger.info("prompt cache: %d hit(s), text encoder not loaded", len(prompts))
        return [o.to(device) for o in out]  # type: ignore[union-attr]
