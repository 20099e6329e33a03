"""Packaging: the wheel carries every module, the presets, the example scenes and the embedded TAESD, and the
installed layout is what :mod:`mirage.data` reads (through importlib.resources) wherever the code comes from.

The wheel is built once per session (``pip wheel``, about 10-30 s) from a clean copy of the source tree, so a stale
``build/`` folder cannot hide a missing file. .ci/run also installs it into a fresh venv and renders from it.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage.data import EXAMPLES, example_dir, example_path, taesd_dir, trajectories_dir
from mirage.errors import MirageError

REPO = Path(__file__).resolve().parents[1]

# source file -> where the wheel must hold it (and the same bytes)
ROOM_FILES = ("image.png", "depth.png")  # README's quickstart and `mirage bench`
FIDELITY_FILES = ("cameras.json", "source.png", "source_depth.png")  # + targets/*.png: `mirage bench fidelity`
TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "LICENSE", "SOURCE.md")


def _expected_data() -> dict[str, Path]:
    """Wheel member name -> source file, for every data file that must ship."""
    out = {f"mirage/data/trajectories/{p.name}": p for p in sorted((REPO / "trajectories").glob("*.yaml"))}
    out.update({f"mirage/data/examples/room/{f}": REPO / "examples" / "room" / f for f in ROOM_FILES})
    fid = REPO / "examples" / "fidelity"
    out.update({f"mirage/data/examples/fidelity/{f}": fid / f for f in FIDELITY_FILES})
    out.update({f"mirage/data/examples/fidelity/targets/{p.name}": p for p in sorted((fid / "targets").glob("*.png"))})
    out.update({f"mirage/weights/taesd/{f}": REPO / "mirage" / "weights" / "taesd" / f for f in TAESD_FILES})
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built by pip from a clean copy of the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "out", ".benchmarks"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip wheel failed:\n{res.stdout}\n{res.stderr}"
    (whl,) = (tmp / "dist").glob("mirage_video-*.whl")
    return whl


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for pkg in ("mirage", "mirage_cli") for p in (REPO / pkg).rglob("*.py")}
    assert "mirage/pipeline.py" in modules and "mirage_cli/main.py" in modules
    assert not modules - names, f"modules missing from the wheel (add their package to pyproject's packages): {sorted(modules - names)}"
    expected = _expected_data()
    assert len([n for n in expected if n.startswith("mirage/data/trajectories/")]) >= 19  # every shipped preset
    assert len([n for n in expected if "/fidelity/targets/" in n]) >= 5
    missing = sorted(set(expected) - names)
    assert not missing, f"data files missing from the wheel (pyproject package-data): {missing}"
    with zipfile.ZipFile(wheel) as z:
        for name, src in expected.items():
            assert z.read(name) == src.read_bytes(), f"{name} differs from {src}"
    assert not [n for n in names if "make_" in n], "the example-making scripts are not package data"


def test_wheel_metadata_lists_the_dependencies(wheel):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
    requires = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.replace(" ", "") for r in requires) == sorted(d.replace(" ", "") for d in project["dependencies"])
    assert any(r.startswith("accelerate>=") for r in requires)  # diffusers' low-memory and sharded loading
    assert meta["Name"] == "mirage-video"


def test_unpacked_wheel_reads_its_own_data(wheel, tmp_path):
    """Code, presets, scenes and TAESD all come from the wheel's files, not from this source tree."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import mirage, mirage.data as d; print(mirage.__file__); print(d.trajectories_dir()); "
            "print(d.example_path('room', 'image.png')); print(d.example_path('fidelity', 'cameras.json')); "
            "print(d.taesd_dir())")
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "300"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    res = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = [Path(s) for s in res.stdout.split()]
    assert len(lines) == 5 and all(p.is_relative_to(site / "mirage") for p in lines), res.stdout
    res = subprocess.run([sys.executable, "-m", "mirage_cli", "traj", "list"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert {ln.split()[0] for ln in res.stdout.splitlines() if ln.strip()} == {p.stem for p in (REPO / "trajectories").glob("*.yaml")}


def test_data_accessors_resolve_to_existing_files():
    presets = trajectories_dir()
    assert sorted(p.name for p in presets.glob("*.yaml")) == sorted(p.name for p in (REPO / "trajectories").glob("*.yaml"))
    for name in EXAMPLES:
        assert example_dir(name).is_dir()
    for f in ROOM_FILES:
        assert example_path("room", f).read_bytes() == (REPO / "examples" / "room" / f).read_bytes()
    assert example_path("fidelity", "targets/01_identity.png").is_file()
    assert sorted(p.name for p in taesd_dir().iterdir() if p.is_file()) == sorted(TAESD_FILES)


def test_data_errors_name_the_file_and_the_fix():
    with pytest.raises(MirageError, match=r"example file room/nope\.png is missing from the installed package \(.*nope\.png\) \(reinstall mirage-video"):
        example_path("room", "nope.png")
    with pytest.raises(MirageError, match=r"example scene 'garden': unknown; shipped scenes: room, fidelity"):
        example_dir("garden")


def test_uninstalled_source_tree_says_to_install(tmp_path):
    """mirage imported from a source tree that is not installed (PYTHONPATH, no site): one line naming the package
    and the fix, not a bare ModuleNotFoundError. (Only mirage/__init__, errors and data are copied: no torch needed.)"""
    pkg = tmp_path / "src" / "mirage"
    shutil.copytree(REPO / "mirage" / "data", pkg / "data", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "mirage" / "errors.py", pkg / "errors.py")
    (pkg / "__init__.py").write_text("")
    code = ("from mirage.data import trajectories_dir\ntry:\n    trajectories_dir()\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "src")},
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == (
        f"MirageError package data mirage.data.trajectories is not importable next to mirage at {pkg} (a source tree "
        "on PYTHONPATH that is not installed, or an editable install older than the data packages) (reinstall "
        "mirage-video; in a source checkout, `pip install -e .`, which also refreshes an older editable install)"), res.stderr


def test_presets_env_still_overrides(monkeypatch, tmp_path):
    from mirage.trajectory import camera_presets_dir

    assert camera_presets_dir() == trajectories_dir()
    monkeypatch.setenv("MIRAGE_PRESETS_DIR", str(tmp_path))
    assert camera_presets_dir() == tmp_path


def test_bench_defaults_are_the_shipped_scene_and_taesd(monkeypatch):
    """`mirage bench` and `mirage bench fidelity` without inputs run on the shipped example scenes and TAESD."""
    import typer
    from typer.testing import CliRunner

    import mirage_cli.fidelity as fid
    from mirage.bench import BenchConfig, example_inputs
    from mirage.config import PipelineConfig

    cfg = BenchConfig(config=PipelineConfig(preset="tiny"))
    assert (cfg.image, cfg.depth_file) == example_inputs() == (example_path("room", "image.png"),
                                                               example_path("room", "depth.png"))
    seen = {}

    def fake_run(scene, vae, **kw):
        seen.update(scene=scene, vae=vae)
        raise MirageError("stop here")

    monkeypatch.setattr(fid, "run_fidelity_folder", fake_run)
    app, bench = typer.Typer(), typer.Typer()
    fid.register(bench)
    app.add_typer(bench, name="bench")
    res = CliRunner().invoke(app, ["bench", "fidelity", "--device", "cpu"])
    assert isinstance(res.exception, MirageError) and str(res.exception) == "stop here"
    assert seen == {"scene": example_dir("fidelity"), "vae": taesd_dir()}


# measured 28.3 dB at 256x128 with diffusers 0.42.1 (the same VAE with random weights: 10.9 dB); floor 2 dB below
PSNR_FLOOR_DB = 26.0


def test_embedded_taesd_loads_and_round_trips_the_example_image():
    from diffusers import AutoencoderTiny
    from PIL import Image

    vae = AutoencoderTiny.from_pretrained(taesd_dir(), torch_dtype=torch.float32).eval()
    assert (vae.config.latent_channels, vae.config.scaling_factor) == (4, 1.0)
    img = Image.open(example_path("room", "image.png")).convert("RGB").resize((256, 128), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, 128, 256)
    with torch.no_grad():
        lat = vae.encode(x).latents  # (1, 4, 16, 32)
        rec = vae.decode(lat).sample.clamp(-1, 1)
    assert lat.shape == (1, 4, 16, 32)
    psnr = 10 * np.log10(1.0 / ((rec - x) / 2).pow(2).mean().item())
    assert psnr > PSNR_FLOOR_DB, f"embedded TAESD round trip {psnr:.2f} dB"

