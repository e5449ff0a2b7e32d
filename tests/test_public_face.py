"""engine's public face: every advertised name resolves, lazily, and nothing imports upward."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import engine
from conftest import ROOT

# Lower layers never import higher ones (a module may import its own layer or below).
LAYERS = [
    {"engine.errors", "engine.quiet", "engine.metrics"},
    {"engine.media", "engine.control", "engine.admission", "engine.tts", "engine.loader"},
    {"engine.transport", "engine.capacity"},
    {"engine.switchboard"},
    {"engine.webhooks"},
    {"engine.server"},
    {"engine.component", "engine.workers", "engine.demo", "engine.testing"},
    {"engine.cli", "engine"},
]


def test_every_public_name_resolves() -> None:
    assert set(engine.__all__) == set(engine._HOMES)  # advertised = resolvable
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
    assert "serve" in dir(engine)


def test_a_stage_can_be_written_from_the_front_door_without_loading_the_server() -> None:
    code = (
        "import sys\n"
        "from engine import CallContext, Stage, Utterance\n"
        "assert 'quart' not in sys.modules and 'hypercorn' not in sys.modules\n"
        "from engine import serve, ServerConfig\n"
        "assert 'quart' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _layer(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer if top != "engine"):
            return index
    return len(LAYERS) - 1


def test_nothing_imports_upward() -> None:
    upward = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module == "engine":
            continue
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                target = node.module
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if target.startswith("engine.") and _layer(target) > _layer(module):
                upward.append(f"{module} imports {target}")
    assert upward == []
