"""Driver run by tests/test_distributed.py under ``python -m torch.distributed.run`` (not a test module itself).

    batch IMAGE_DIR OUT_DIR RESULT_DIR [cp]
                                         render_distributed on the tiny preset; each rank writes RESULT_DIR/rank<R>.json
                                         and exits with the CLI's code (1 if any input failed on any rank); with
                                         "cp", the cp check below runs first (one launch instead of two)
    cp RESULT_DIR                        context_parallel on a tiny WanVACETransformer3DModel over the gloo group;
                                         each rank writes RESULT_DIR/cp<R>.json (max |CP - single process|)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def batch(image_dir: str, out_dir: str, result_dir: str, also_cp: str = "") -> int:
    if also_cp == "cp":
        cp(result_dir, keep_group=True)  # render_distributed reuses the group (re-initialising one can hang)
    from mirage.batch import OutputRequest
    from mirage.config import split_settings
    from mirage.errors import MirageError
    from mirage.inputs import TrajectoryOptions
    from mirage.parallel import render_distributed

    config, options = split_settings(preset="tiny", device="cpu", size=(64, 32), steps=2, chunk_frames=5)
    res = render_distributed([image_dir], TrajectoryOptions(spec="orbit", frames=5), OutputRequest(out_dir=Path(out_dir)),
                             config, options, backend="gloo")
    out = {"rank": res.rank, "world_size": res.world_size, "ok": res.ok, "failed": list(res.failed),
           "summary": str(res.summary) if res.summary else None,
           "items": [{"image": str(i.image), "status": i.status} for i in res.batch.items]}
    code = 0
    try:
        res.raise_if_failed()
    except MirageError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    out["exit_code"] = code
    Path(result_dir, f"rank{res.rank}.json").write_text(json.dumps(out))
    return code


def cp(result_dir: str, keep_group: bool = False) -> int:
    import torch.distributed as dist
    from diffusers import WanVACETransformer3DModel

    from mirage.errors import InputError
    from mirage.parallel import context_parallel, init_distributed

    env = init_distributed("gloo")
    torch.manual_seed(0)
    model = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    ).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 3, 8, 12, generator=g)  # 3 x 4 x 6 = 72 tokens
    ctrl = torch.randn(1, 96, 3, 8, 12, generator=g)
    text = torch.randn(1, 7, 32, generator=g)
    t = torch.tensor([500])
    kw = dict(timestep=t, encoder_hidden_states=text, control_hidden_states=ctrl,
              control_hidden_states_scale=torch.tensor([1.0, 0.7]), return_dict=False)
    with torch.no_grad():
        ref = model(hidden_states=x, **kw)[0]
        info = context_parallel(model)
        seen: dict[str, int] = {}  # tokens each rank's blocks really see (inside the hooked blocks)

        def spy(key):
            def hook(module, args, output):
                seen.setdefault(key, int(args[0].shape[1]))
            return hook

        model.blocks[0].ffn.register_forward_hook(spy("block_tokens"))
        model.vace_blocks[1].ffn.register_forward_hook(spy("vace_tokens"))
        out = model(hidden_states=x, **kw)[0]
        odd = None
        try:
            model(hidden_states=torch.randn(1, 16, 1, 6, 6, generator=g), timestep=t, encoder_hidden_states=text,
                  control_hidden_states=torch.randn(1, 96, 1, 6, 6, generator=g), return_dict=False)
        except InputError as e:  # 9 tokens over 2 ranks
            odd = str(e)
    res = {"rank": env.rank, "shape": list(out.shape), "ref_shape": list(ref.shape),
           "max_abs_diff": float((out - ref).abs().max()), "ref_abs_max": float(ref.abs().max()),
           "ulysses": info.ulysses_degree, **seen, "ring": info.ring_degree, "odd_error": odd}
    Path(result_dir, f"cp{env.rank}.json").write_text(json.dumps(res))
    dist.barrier()
    if not keep_group:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    code = {"batch": batch, "cp": cp}[mode](*rest)
    # every result is written and the process group is gone: leave without the interpreter's teardown, where gloo's
    # CPU worker threads (torch 2.14.1) abort a rank now and then ("terminate called without an active exception",
    # about once in six CI runs; docs/scale-out.md), turning a finished run into a failed one
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
