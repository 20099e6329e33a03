"""Sampling settings of the denoiser: the model maintainers' defaults, the ``--fast`` and ``--distilled`` profiles,
and their resolution.

Three profiles (:class:`SamplingProfile`):

* ``standard`` (the default): what the model's maintainers publish for Wan 2.1 VACE. 50 steps and guidance 5.0
  (diffusers ``WanVACEPipeline.__call__`` defaults), Wan's own negative prompt (``sample_neg_prompt`` of the Wan
  repository's ``wan/configs/shared_config.py``), and the flow shift by resolution (3.0 at 480p, 5.0 at 720p: the
  diffusers ``WanVACEPipeline`` example). Sources, versions and the reasoning behind the flow-shift rule are in
  docs/models.md, "Sampling defaults".
* ``fast``: mirage's earlier settings, for previews and step/guidance-distilled models: 20 steps, guidance off
  (one transformer forward per step), and the flow shift of the repo's own scheduler config at every size.
* ``distilled``: the published settings of lightx2v's step- and CFG-distilled LoRA, which the pipeline fuses into the
  transformer (the preset names it: :attr:`mirage.hub.PresetSpec.distill_lora`): 4 steps, guidance off, flow shift
  5.0 (ModelTC/LightX2V ``configs/distill/wan_t2v_distill_4step_cfg_lora.json``: ``infer_steps`` 4,
  ``enable_cfg`` false, ``sample_shift`` 5, LoRA strength 1.0).

Explicit values (``--steps``, ``--guidance``, ``--negative-prompt``, ``--flow-shift``) win over the profile.
:func:`resolve_sampling` is the one place that combines them; it needs the output size (for the flow shift) and
nothing else, so a render's settings are known and checked before any model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from mirage.errors import InputError


class SamplingProfile(str, Enum):
    """Where the sampling settings that are not given explicitly come from."""

    STANDARD = "standard"  # the model maintainers' published defaults (docs/models.md, "Sampling defaults")
    FAST = "fast"  # mirage's few-step, no-guidance settings: previews and distilled models
    DISTILLED = "distilled"  # the preset's step-distilled LoRA (fused) and its published settings: 4 steps, no CFG


#: diffusers ``WanVACEPipeline.__call__(num_inference_steps=50)`` (and Wan's ``generate.py`` for VACE).
STANDARD_STEPS = 50
#: diffusers ``WanVACEPipeline.__call__(guidance_scale=5.0)`` (and Wan's ``generate.py --sample_guide_scale``).
STANDARD_GUIDANCE = 5.0
#: Wan 2.1's standard negative prompt, verbatim: ``wan_shared_cfg.sample_neg_prompt`` in the Wan repository's
#: ``wan/configs/shared_config.py``; ``wan/vace.py`` ``WanVace.generate`` uses it whenever ``n_prompt == ""``.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
#: (resolution class, its pixel area, flow shift): diffusers ``WanVACEPipeline`` example,
#: ``flow_shift = 3.0  # 5.0 for 720P, 3.0 for 480P``. A size takes the class nearest to it in log pixel area.
FLOW_SHIFT_BY_RESOLUTION = (
    ("480p", 832 * 480, 3.0),
    ("720p", 1280 * 720, 5.0),
)
#: The fast profile: mirage's settings before issue 13 (kept exactly, so earlier benchmarks stay comparable).
FAST_STEPS = 20
FAST_GUIDANCE = 1.0
#: The distilled profile: lightx2v's LoRA config (ModelTC/LightX2V ``configs/distill/wan_t2v_distill_4step_cfg_lora.json``
#: at 930c320: ``"infer_steps": 4``, ``"enable_cfg": false``, ``"sample_shift": 5``, 832x480, 81 frames).
DISTILLED_STEPS = 4
DISTILLED_GUIDANCE = 1.0
DISTILLED_FLOW_SHIFT = 5.0


@dataclass(frozen=True)
class SamplingSettings:
    """The sampling settings of one render, resolved.

    Attributes:
        steps: scheduler steps (>= 1).
        guidance: classifier-free guidance scale; 1.0 = off (one transformer forward per step), > 1 = two.
        negative_prompt: the unconditional prompt of guidance (unused when ``guidance == 1``).
        flow_shift: the scheduler's ``flow_shift`` (> 0); None = the repo's scheduler config's own value.
        profile: the profile the unset values came from.
        flow_shift_source: where ``flow_shift`` came from: ``--flow-shift``, ``480p``/``720p`` (the resolution
            rule), ``distilled LoRA`` or ``scheduler config``.
    """

    steps: int
    guidance: float
    negative_prompt: str
    flow_shift: float | None
    profile: SamplingProfile = SamplingProfile.STANDARD
    flow_shift_source: str = "scheduler config"


def resolution_class(width: int, height: int) -> tuple[str, float]:
    """(class name, flow shift) of a ``width`` x ``height`` pixel video: the class of
    :data:`FLOW_SHIFT_BY_RESOLUTION` nearest in log pixel area (so 832x480 and 480x832 are 480p, 1280x720 and
    960x960 are 720p; the boundary is at ~607k pixels, e.g. 1024x576 is 480p and 1088x608 is 720p)."""
    if width < 1 or height < 1:
        raise InputError(f"size: {width}x{height} must be positive")
    log_area = math.log(width * height)
    name, _, shift = min(FLOW_SHIFT_BY_RESOLUTION, key=lambda r: abs(log_area - math.log(r[1])))
    return name, shift


def check_sampling_options(
    *, steps: int | None = None, guidance: float | None = None, flow_shift: float | None = None
) -> None:
    """Validate explicit sampling values (None = unset): one-line :class:`InputError` naming option, value, fix."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError(f"--steps {steps}: must be a whole number >= 1 (e.g. 50, or 20 with --fast)")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 1.0):
        raise InputError(f"--guidance {guidance:g}: must be >= 1.0 (1.0 = off; the standard is {STANDARD_GUIDANCE})")
    if flow_shift is not None and not (math.isfinite(flow_shift) and flow_shift > 0):
        raise InputError(f"--flow-shift {flow_shift:g}: must be > 0 (e.g. 3.0 at 480p, 5.0 at 720p)")


def resolve_sampling(
    profile: SamplingProfile,
    width: int,
    height: int,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    flow_shift: float | None = None,
) -> SamplingSettings:
    """The sampling settings of a render: explicit values where given, else the profile's.

    Args:
        profile: where unset values come from.
        width, height: output size in pixels (picks the flow shift of the standard profile).
        steps, guidance, negative_prompt, flow_shift: explicit values; None = the profile's.

    Returns:
        the resolved, validated settings. The fast profile keeps the scheduler config's flow shift
        (``flow_shift=None``) unless one is given; the distilled one uses 5.0 at every size.
    """
    profile = SamplingProfile(profile)
    check_sampling_options(steps=steps, guidance=guidance, flow_shift=flow_shift)
    fast = profile is SamplingProfile.FAST
    distilled = profile is SamplingProfile.DISTILLED
    if flow_shift is not None:
        shift, source = float(flow_shift), "--flow-shift"
    elif fast:
        shift, source = None, "scheduler config"
    elif distilled:
        shift, source = DISTILLED_FLOW_SHIFT, "distilled LoRA"
    else:
        source, shift = resolution_class(width, height)
    default_steps, default_guidance = {
        SamplingProfile.STANDARD: (STANDARD_STEPS, STANDARD_GUIDANCE),
        SamplingProfile.FAST: (FAST_STEPS, FAST_GUIDANCE),
        SamplingProfile.DISTILLED: (DISTILLED_STEPS, DISTILLED_GUIDANCE),
    }[profile]
    standard = profile is SamplingProfile.STANDARD
    return SamplingSettings(
        steps=int(steps) if steps is not None else default_steps,
        guidance=float(guidance) if guidance is not None else default_guidance,
        negative_prompt=negative_prompt if negative_prompt is not None else (WAN_NEGATIVE_PROMPT if standard else ""),
        flow_shift=shift,
        profile=profile,
        flow_shift_source=source,
    )


__all__ = [
    "SamplingProfile", "SamplingSettings", "resolve_sampling", "resolution_class", "check_sampling_options",
    "STANDARD_STEPS", "STANDARD_GUIDANCE", "WAN_NEGATIVE_PROMPT", "FLOW_SHIFT_BY_RESOLUTION", "FAST_STEPS",
    "FAST_GUIDANCE", "DISTILLED_STEPS", "DISTILLED_GUIDANCE", "DISTILLED_FLOW_SHIFT",
]
