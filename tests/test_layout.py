"""The layout's promises: one import name, who may import whom, a light SDK.

Rules (the README's "How it fits together" shows them):

- ``intentwatch.contracts``, ``intentwatch.schemas`` and ``intentwatch.tokens`` are the
  shared vocabulary: standard library, msgspec and joserfc only;
- ``intentwatch.models`` is pure scoring: the vocabulary plus msgspec (learned state), numpy,
  river, scikit-learn and tldextract; no faust, no Kafka client, no pipeline, SDK or CLI;
- ``intentwatch.sdk`` is what agents and brokers install: the vocabulary plus kafka-python,
  never the engine or the worker's dependencies;
- ``intentwatch.pipeline`` is the worker: it may use the engine, never the CLI or the demo;
- ``intentwatch.ssf`` is the Shared Signals transmitter: the vocabulary, aiohttp and aiokafka,
  the worker's settings and topic set-up, the SDK's JWKS download; never the engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"intentwatch": REPO / "intentwatch", "intentwatch.models": REPO / "models",
            "intentwatch.pipeline": REPO / "pipeline"}
WORKER_ONLY = ("faust", "aiokafka", "river", "sklearn", "scipy", "numpy", "tldextract", "mode",
               "opentelemetry")
VOCABULARY = ("intentwatch.contracts", "intentwatch.schemas", "intentwatch.tokens")

ALLOWED: dict[str, tuple[str, ...]] = {
    "intentwatch.contracts": ("msgspec",),
    "intentwatch.schemas": ("msgspec", "intentwatch.contracts", "intentwatch.tokens"),
    "intentwatch.tokens": ("msgspec", "joserfc", *VOCABULARY),
    "intentwatch.models": (*VOCABULARY, "msgspec", "numpy", "river", "sklearn", "tldextract"),
    "intentwatch.sdk": (*VOCABULARY, "intentwatch.sdk", "kafka", "msgspec"),
    "intentwatch.ssf": (*VOCABULARY, "intentwatch.sdk.subscriber", "intentwatch.pipeline.settings",
                        "intentwatch.pipeline.topics", "aiohttp", "aiokafka", "kafka", "msgspec"),
}
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "intentwatch.pipeline": ("intentwatch.cli", "intentwatch.demo", "intentwatch.sdk"),
}


def modules() -> dict[str, Path]:
    """Every module of the installed packages, by dotted name."""
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if package == "intentwatch" and name.split(".")[1:2] in (["models"], ["pipeline"]):
                continue
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (relative imports are not used here)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
    return names


def _is_stdlib(name: str) -> bool:
    return name.split(".")[0] in (*sys.stdlib_module_names, "__future__", "_typeshed")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_project_installs_one_import_name() -> None:
    """Only ``intentwatch*`` is packaged; models/ and pipeline/ are reached through links."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["intentwatch*"]
    for folder in ("models", "pipeline"):
        link = REPO / "intentwatch" / folder
        assert link.is_symlink() and link.resolve() == REPO / folder


def test_the_installed_subpackages_are_the_top_level_folders() -> None:
    import intentwatch.models.engine
    import intentwatch.pipeline.settings

    assert Path(intentwatch.models.engine.__file__).resolve() == REPO / "models" / "engine.py"
    assert Path(intentwatch.pipeline.settings.__file__).resolve().parent == REPO / "pipeline"


def test_no_module_imports_the_old_top_level_names() -> None:
    offenders = {name: sorted(i for i in imports_of(path) if _within(i, ("models", "pipeline")))
                 for name, path in modules().items()}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_it_may(layer: str) -> None:
    allowed = (*ALLOWED[layer], layer)
    offenders = {
        name: sorted(i for i in imports_of(path) if not _is_stdlib(i) and not _within(i, allowed))
        for name, path in modules().items() if _within(name, (layer,))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_keeps_out_of_what_it_must_not_use(layer: str) -> None:
    offenders = {
        name: sorted(i for i in imports_of(path) if _within(i, FORBIDDEN[layer]))
        for name, path in modules().items() if _within(name, (layer,))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_sdk_needs_none_of_the_workers_dependencies() -> None:
    """Declared so: the worker's dependencies are an extra, not the base install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {dep.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
            for dep in project["dependencies"]}
    assert not base & {"faust-streaming", "aiokafka", "river", "scikit-learn", "numpy",
                       "scipy", "tldextract"}
    assert "faust-streaming==0.15.3" in project["optional-dependencies"]["worker"]


_BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {WORKER_ONLY!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def test_the_sdk_and_the_cli_work_without_the_workers_dependencies() -> None:
    """An environment without faust, river, scikit-learn or numpy (their imports fail)."""
    script = _BLOCKER + """
import intentwatch
from intentwatch import RevocationSubscriber, TelemetryPublisher, ContractError
from intentwatch.reference import CredentialBroker, ToolGateway
import intentwatch.sdk.instrument, intentwatch.tokens.grants, intentwatch.schemas
from intentwatch.cli import app
try:
    app(["--help"], standalone_mode=False)
except SystemExit as stop:
    assert not stop.code, stop.code
print("sdk-ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("sdk-ok")
