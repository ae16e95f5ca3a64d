"""The package installs as spectro_fx.* (editable and as a wheel) with both console scripts."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_imports_come_from_the_mapped_folders():
    import spectro_fx.assets
    import spectro_fx.effect
    import spectro_fx.models
    import spectro_fx.training

    assert Path(spectro_fx.models.__file__).parent.name == "models"
    assert Path(spectro_fx.effect.__file__).parent.name == "effect"


@pytest.mark.parametrize("script", ["spectro-fx", "spectro-fx-train"])
def test_console_scripts_run(script):
    exe = Path(sys.executable).parent / script
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.slow
def test_wheel_installs_only_under_spectro_fx(tmp_path):
    build = tmp_path / "src"
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".venv", ".venv-neutone", ".git", "*.egg-info", "build", "out", "runs"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(build)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("spectro_fx-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"spectro_fx", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    for package in ("effect", "effect/core", "effect/plugins", "effect/export", "effect/io", "effect/io/ui",
                    "models", "training", "assets"):
        assert f"spectro_fx/{package}/__init__.py" in names
    for page in ("index.html", "app.js", "style.css"):  # the --ui page ships in the package
        assert f"spectro_fx/effect/io/ui/static/{page}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "spectro-fx = spectro_fx.effect.io.cli:main" in text
    assert "spectro-fx-train = spectro_fx.training.cli:main" in text
    # install it into a fresh target folder and import from there
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    assert not any((target / name).exists() for name in ("effect", "models", "training", "assets"))
    code = "import spectro_fx.models.export, spectro_fx.assets; print(spectro_fx.models.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(target)}, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
    # every entry point of the installed wheel (console scripts, effect plugins) loads from there
    code = (
        "import sys; from importlib.metadata import distributions\n"
        f"dist = next(distributions(name='spectro-fx', path=[{str(target)!r}]))\n"
        "for ep in dist.entry_points:\n"
        "    obj = ep.load(); print(ep.group, ep.name, sys.modules[obj.__module__].__file__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(target)}, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = [line.split() for line in out.stdout.splitlines()]
    assert {(group, name) for group, name, _ in loaded} >= {
        ("console_scripts", "spectro-fx"), ("console_scripts", "spectro-fx-train"),
        *(("spectro_fx.effects", name) for name in ("none", "noise", "inpaint", "dropout", "cross")),
    }
    assert all(file.startswith(str(target)) for _, _, file in loaded), loaded
