"""The package installs as spectro_fx.* (editable and as a wheel) with both console scripts.

The slow tests build the wheel a user installs, check that it holds every package and data file of
the source tree, install it (not editable) into a fresh virtual environment and run every command
from a folder outside the checkout.
"""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]  # "spectro_fx.effect" -> "effect", ...
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")


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


def test_version_is_the_installed_distributions(capsys):
    from spectro_fx.effect.io.cli import main as fx_main
    from spectro_fx.training.cli import main as train_main

    for main, prog in ((fx_main, "spectro-fx"), (train_main, "spectro-fx-train")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.strip() == f"{prog} {version('spectro-fx')}"


def source_inventory(tree: Path) -> set[str]:
    """Every file the wheel must hold, as its path inside the wheel: all files under the mapped
    folders (code and data alike) but Python's caches."""
    wanted = set()
    for package, folder in PACKAGE_DIR.items():
        base = tree / folder
        for path in base.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc" \
                    and not any(part.endswith(".egg-info") for part in path.parts):
                wanted.add("/".join([*package.split("."), *path.relative_to(base).parts]))
    return wanted


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel, and the copy of what a clean clone holds for the build that it was built from."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    for folder in PACKAGE_DIR.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next((tmp / "dist").glob("spectro_fx-*.whl")), src


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_data_file(wheel):
    wheel, source_tree = wheel
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    dist_info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"
    shipped = {n for n in names if not n.startswith(dist_info + "/")}
    wanted = source_inventory(source_tree)
    print(f"\n{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB, {len(names)} files "
          f"({sum(i.file_size for i in archive.infolist()) / 1e6:.1f} MB unpacked)")
    folders: dict[str, list[int]] = {}
    for name in sorted(wanted | shipped):
        counts = folders.setdefault(name.rsplit("/", 1)[0], [0, 0])
        counts[0] += name in wanted
        counts[1] += name in shipped
    for folder, (in_source, in_wheel) in folders.items():
        print(f"  {folder:<40} source tree {in_source:3d}, wheel {in_wheel:3d}")
    assert wanted - shipped == set(), f"in the source tree, missing from the wheel: {sorted(wanted - shipped)}"
    assert shipped - wanted == set(), f"in the wheel, not in the source tree: {sorted(shipped - wanted)}"
    # nothing generic like `models` at the top of site-packages
    assert {n.split("/")[0] for n in names} == {"spectro_fx", dist_info}
    for package in ("effect/io/validate", "effect/io/ui", "training/energy"):  # subpackages a hand-kept list once missed
        assert f"spectro_fx/{package}/__init__.py" in names
    text = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "spectro-fx = spectro_fx.effect.io.cli:main" in text
    assert "spectro-fx-train = spectro_fx.training.cli:main" in text


def _test_environment_site_packages() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]


@pytest.mark.slow
def test_the_installed_wheel_runs_every_command(wheel, tmp_path):
    import soundfile as sf

    wheel, _ = wheel
    from spectro_fx.effect.io.cli import SUBCOMMANDS
    from spectro_fx.training.cli import build_parser as train_parser

    # a fresh environment that reuses this one's dependencies through a .pth file (read after its own
    # site-packages, so the wheel's files come first; the .pth files of this environment, the
    # editable install's among them, are not processed from there)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        check=True, capture_output=True, text=True).stdout.strip())
    (site_packages / "test_environment.pth").write_text("\n".join(_test_environment_site_packages()) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    work = tmp_path / "elsewhere"  # outside the checkout: nothing of it on sys.path
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["OMP_NUM_THREADS"] = "1"

    def run(*args: str, ok=(0,), timeout=300) -> subprocess.CompletedProcess:
        done = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode in ok, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    code = ("import spectro_fx, spectro_fx.effect.io.validate, spectro_fx.training.energy, spectro_fx.assets\n"
            "from importlib.metadata import distribution\n"
            "print(spectro_fx.__file__); print(spectro_fx.assets.asset_path('demo.wav'))\n"
            "print(distribution('spectro-fx')._path)\n")
    paths = run(python, "-c", code).stdout.split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in paths), paths

    # every entry point of the installed wheel (console scripts, effect plugins) loads from there
    code = ("import sys; from importlib.metadata import distribution\n"
            "for ep in distribution('spectro-fx').entry_points:\n"
            "    obj = ep.load(); print(ep.group, ep.name, sys.modules[obj.__module__].__file__)\n")
    loaded = [line.split() for line in run(python, "-c", code).stdout.splitlines()]
    assert {(group, name) for group, name, _ in loaded} >= {
        ("console_scripts", "spectro-fx"), ("console_scripts", "spectro-fx-train"),
        *(("spectro_fx.effects", name) for name in ("none", "noise", "inpaint", "dropout", "cross")),
    }
    assert all(Path(file).resolve().is_relative_to(venv.resolve()) for _, _, file in loaded), loaded

    fx, train = venv / "bin" / "spectro-fx", venv / "bin" / "spectro-fx-train"
    assert run(fx, "--version").stdout.strip() == f"spectro-fx {version('spectro-fx')}"
    assert run(train, "--version").stdout.strip() == f"spectro-fx-train {version('spectro-fx')}"
    assert "usage: spectro-fx" in run(fx, "--help").stdout
    for command in SUBCOMMANDS:
        assert f"usage: spectro-fx {command}" in run(fx, command, "--help").stdout
    listing = run(fx, "--list").stdout
    assert "bundled models" in listing and "effect inpaint" in listing
    assert "usage: spectro-fx-train" in run(train, "--help").stdout
    commands = next(a for a in train_parser()._actions if a.dest == "command").choices
    for command in commands:
        assert f"usage: spectro-fx-train {command}" in run(train, command, "--help").stdout

    # a one-second render of a file, with the bundled default model
    t = np.arange(48000) / 48000
    sf.write(work / "in.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000, subtype="FLOAT")
    run(fx, "--input", "in.wav", "--output", "out.wav", "--quiet")
    out, sr = sf.read(str(work / "out.wav"), dtype="float32")
    assert sr == 48000 and out.shape == (48000,) and np.isfinite(out).all()

    # the pre-gig check runs every check (a busy machine may fail `realtime`: exit 1 then, not a crash)
    report = run(fx, "validate", "--strictness", "1", "--quiet", "--json", "report.json", ok=(0, 1), timeout=900)
    from spectro_fx.effect.io.validate.validator import CHECKS

    for check in CHECKS:
        assert check in report.stdout, report.stdout
    assert (work / "report.json").is_file()
