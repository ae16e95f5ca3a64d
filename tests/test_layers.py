"""The effect package's layers: core <- plugins <- export, and the I/O edges on top; never the other way.

Reads every module's imports (lazy ones inside functions included) with ast, and imports the core
in a fresh interpreter to see what it pulls in.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EFFECT = Path(__file__).resolve().parents[1] / "effect"
PACKAGE = "spectro_fx.effect"
LAYERS = ("core", "plugins", "export", "io")

IO_LIBRARIES = {"sounddevice", "rtmidi", "mido", "aiohttp", "soundfile", "argparse", "matplotlib", "selenium", "socket", "subprocess", "tqdm"}
"""Libraries that open devices, ports, files or a command line: the edges' business, not the core's."""

ALLOWED = {
    # layer: the layers of spectro_fx.effect it may import (the package itself re-exports the core's API)
    "core": {"core"},
    "plugins": {"core"},  # not each other: each stands alone, as a third-party one does
    "export": {"core", "plugins", "export"},
    "io": {"core", "plugins", "io"},
}
EXCEPTIONS = {
    # the export command is a CLI of its own: it finds the model file as the other commands do
    ("spectro_fx.effect.export.export_cmd", "spectro_fx.effect.io.render"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(EFFECT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def imported_names(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if node.module is None:  # `from . import audio_io`: the names are modules
                found.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                found.add(target)
    return found


def layer_of(name: str) -> str | None:
    """The layer of a spectro_fx.effect module (None for the package itself)."""
    rest = name[len(PACKAGE) + 1 :].split(".") if name.startswith(PACKAGE + ".") else []
    return rest[0] if rest else None


MODULES = sorted(EFFECT.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    strays = [str(p.relative_to(EFFECT)) for p in MODULES if p.parent == EFFECT and p.name != "__init__.py"]
    assert not strays, f"modules outside core/, plugins/, export/, io/: {strays}"
    assert {p.relative_to(EFFECT).parts[0] for p in MODULES if p.parent != EFFECT} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(EFFECT)))
def test_imports_follow_the_layers(path):
    name = module_name(path)
    layer = layer_of(name)
    imports = imported_names(path)
    if layer is None:  # effect/__init__.py: the public API, from the core only
        assert {layer_of(i) for i in imports if i.startswith(PACKAGE + ".")} <= {"core"}, imports
        return
    wrong = sorted(
        i for i in imports
        if i.startswith(PACKAGE + ".") and layer_of(i) not in ALLOWED[layer] and (name, i) not in EXCEPTIONS
    )
    assert not wrong, f"{name} ({layer}) imports {wrong}; {layer} may import only {sorted(ALLOWED[layer])}"
    assert not any(i.startswith("spectro_fx.training") for i in imports), f"{name} imports training code"
    if layer in ("core", "plugins"):
        io = sorted(i for i in imports if i.split(".")[0] in IO_LIBRARIES)
        assert not io, f"{name} ({layer}) imports I/O libraries {io}"


def test_importing_the_core_loads_no_io_and_no_plugin():
    core = sorted(module_name(p) for p in MODULES if layer_of(module_name(p)) == "core")
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in core)
        + "print('\\n'.join(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert f"{PACKAGE}.core.engine" in loaded
    # torch itself loads argparse, tqdm, socket and subprocess; the libraries below it never needs
    io = sorted(m for m in loaded if m.split(".")[0] in IO_LIBRARIES - {"argparse", "tqdm", "socket", "subprocess"})
    assert not io, f"importing the core loads {io}"
    outer = sorted(m for m in loaded if layer_of(m) in ("plugins", "export", "io"))
    assert not outer, f"importing the core loads {outer}"


def test_plugins_use_the_public_api_the_package_exports():
    import spectro_fx.effect as api
    from spectro_fx.effect.core import effects

    for name in api.__all__:
        assert getattr(api, name) is getattr(effects, name)
    registry = api.available_effects()
    assert {"none", "noise", "inpaint", "dropout", "cross"} <= set(registry)
    for cls in registry.values():
        assert issubclass(cls, api.Effect)
        if cls.__module__.startswith(PACKAGE):
            assert layer_of(cls.__module__) == "plugins", f"built-in effect {cls.__name__} lives in {cls.__module__}"
