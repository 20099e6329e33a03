"""Sampling settings (issue 13): the maintainers' defaults, the flow shift by resolution, the --fast profile and
explicit values over both, checked against the sources they come from where those are installed (diffusers)."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from mirage.errors import InputError
from mirage.sampling import (
    FAST_GUIDANCE,
    FAST_STEPS,
    STANDARD_GUIDANCE,
    STANDARD_STEPS,
    WAN_NEGATIVE_PROMPT,
    SamplingProfile,
    SamplingSettings,
    check_sampling_options,
    resolution_class,
    resolve_sampling,
)

STANDARD, FAST = SamplingProfile.STANDARD, SamplingProfile.FAST


def test_standard_steps_and_guidance_are_diffusers_wan_vace_defaults():
    """The constants are the installed diffusers' own ``WanVACEPipeline.__call__`` defaults (not a copy that can
    drift silently: a diffusers release that changes them fails here)."""
    from diffusers import WanVACEPipeline

    params = inspect.signature(WanVACEPipeline.__call__).parameters
    assert params["num_inference_steps"].default == STANDARD_STEPS == 50
    assert params["guidance_scale"].default == STANDARD_GUIDANCE == 5.0


def test_flow_shift_rule_is_the_diffusers_vace_example():
    """diffusers' WanVACEPipeline example: ``flow_shift = 3.0  # 5.0 for 720P, 3.0 for 480P``."""
    import diffusers.pipelines.wan.pipeline_wan_vace as pwv

    assert "flow_shift = 3.0  # 5.0 for 720P, 3.0 for 480P" in pwv.EXAMPLE_DOC_STRING
    assert resolution_class(832, 480) == ("480p", 3.0)
    assert resolution_class(1280, 720) == ("720p", 5.0)


@pytest.mark.parametrize(
    "size, cls, shift",
    [
        ((832, 480), "480p", 3.0), ((480, 832), "480p", 3.0),  # Wan's 480p, both orientations
        ((1280, 720), "720p", 5.0), ((720, 1280), "720p", 5.0),
        ((960, 960), "720p", 5.0),  # 720p's pixel area, square
        ((624, 624), "480p", 3.0),
        ((1024, 576), "480p", 3.0), ((1088, 608), "720p", 5.0),  # either side of the boundary, ~607k pixels
        ((112, 64), "480p", 3.0), ((64, 48), "480p", 3.0),  # the tiny test sizes: below 480p is 480p
        ((1920, 1088), "720p", 5.0),  # above 720p is 720p
    ],
)
def test_flow_shift_by_resolution(size, cls, shift):
    assert resolution_class(*size) == (cls, shift)
    s = resolve_sampling(STANDARD, *size)
    assert (s.flow_shift, s.flow_shift_source) == (shift, cls)


def test_boundary_is_the_geometric_mean_of_480p_and_720p_areas():
    edge = math.sqrt(832 * 480 * 1280 * 720)  # ~606,671 pixels
    side = math.sqrt(edge)
    assert resolution_class(int(side) - 1, int(side) - 1)[0] == "480p"
    assert resolution_class(int(side) + 1, int(side) + 1)[0] == "720p"


def test_standard_profile_is_the_maintainers_defaults():
    s = resolve_sampling(STANDARD, 832, 480)
    assert s == SamplingSettings(steps=50, guidance=5.0, negative_prompt=WAN_NEGATIVE_PROMPT, flow_shift=3.0,
                                 profile=STANDARD, flow_shift_source="480p")


def test_wan_negative_prompt_is_wans_verbatim():
    """The verbatim copy of ``sample_neg_prompt`` (Wan-Video/Wan2.1 wan/configs/shared_config.py at 9737cba): its
    UTF-8 SHA-256 was taken from that file's string literal, so one changed character fails here."""
    import hashlib

    assert hashlib.sha256(WAN_NEGATIVE_PROMPT.encode("utf-8")).hexdigest() == (
        "ce96e0324e4b54ce4b6e867f669ca520952e1a34cc116543516b1897f0d3c47e")
    assert len(WAN_NEGATIVE_PROMPT) == 137 and WAN_NEGATIVE_PROMPT.count("，") == 27
    assert WAN_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态，") and WAN_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")
    assert "JPEG压缩残留" in WAN_NEGATIVE_PROMPT and " " not in WAN_NEGATIVE_PROMPT


@pytest.mark.parametrize("size", [(112, 64), (832, 480), (1280, 720)])
def test_fast_is_todays_settings_at_every_size(size):
    """--fast keeps mirage's settings before issue 13 exactly: 20 steps, guidance off, the scheduler config's shift."""
    s = resolve_sampling(FAST, *size)
    assert s == SamplingSettings(steps=20, guidance=1.0, negative_prompt="", flow_shift=None, profile=FAST,
                                 flow_shift_source="scheduler config")
    assert (FAST_STEPS, FAST_GUIDANCE) == (20, 1.0)


@pytest.mark.parametrize("profile", [STANDARD, FAST])
@pytest.mark.parametrize(
    "field, value",
    [("steps", 7), ("guidance", 2.5), ("guidance", 1.0), ("negative_prompt", "blurry"), ("negative_prompt", ""),
     ("flow_shift", 16.0)],
)
def test_explicit_values_win_over_the_profile(profile, field, value):
    base = resolve_sampling(profile, 1280, 720)
    s = resolve_sampling(profile, 1280, 720, **{field: value})
    assert getattr(s, field) == value
    # ... and only that field changes
    changed = {f.name for f in dataclasses.fields(s) if getattr(s, f.name) != getattr(base, f.name)}
    assert changed <= {field, "flow_shift_source"}
    if field == "flow_shift":
        assert s.flow_shift_source == "--flow-shift"


def test_profile_accepts_its_value_string():
    assert resolve_sampling("fast", 64, 48) == resolve_sampling(FAST, 64, 48)
    with pytest.raises(ValueError):
        resolve_sampling("slow", 64, 48)


@pytest.mark.parametrize(
    "kw, line",
    [
        ({"steps": 0}, "--steps 0: must be a whole number >= 1"),
        ({"steps": -3}, "--steps -3: must be"),
        ({"guidance": 0.5}, "--guidance 0.5: must be >= 1.0"),
        ({"guidance": float("nan")}, "--guidance nan: must be >= 1.0"),
        ({"flow_shift": -1.0}, "--flow-shift -1: must be > 0"),
        ({"flow_shift": 0.0}, "--flow-shift 0: must be > 0"),
        ({"flow_shift": float("inf")}, "--flow-shift inf: must be > 0"),
    ],
)
def test_bad_values_are_one_line_naming_option_value_and_fix(kw, line):
    with pytest.raises(InputError) as e:
        check_sampling_options(**kw)
    msg = str(e.value)
    assert msg.startswith(line) and "\n" not in msg, msg
    assert "(e.g." in msg or "the standard is" in msg, msg  # ... and how to fix it
    with pytest.raises(InputError, match=line.split(":")[0]):
        resolve_sampling(STANDARD, 64, 48, **kw)


def test_render_config_checks_sampling_before_anything_loads():
    from mirage.config import RenderOptions, check_render_options

    check_render_options(RenderOptions())  # all None: the profile's
    for kw, opt in (({"steps": 0}, "--steps"), ({"guidance": 0.0}, "--guidance"), ({"flow_shift": -2.0}, "--flow-shift")):
        with pytest.raises(InputError, match=opt):
            check_render_options(RenderOptions(**kw))
