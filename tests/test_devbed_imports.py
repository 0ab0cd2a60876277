"""The device test beds stay outside the product's import graph: only a ``devbed`` command loads them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mtl_edge

PRODUCT = ["mtl_edge.cli", "mtl_edge.bench.harness", "mtl_edge.export", "mtl_edge.train.run"]
PACKAGE = Path(mtl_edge.__file__).parent


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_the_product_loads_no_devbed_module():
    loaded = _loaded_after("\n".join(f"import {name}" for name in PRODUCT))
    assert set(PRODUCT) <= set(loaded)
    assert [m for m in loaded if m.startswith("mtl_edge.devbed")] == []


def test_no_module_outside_devbed_imports_it_at_import_time():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "devbed") in path.parents:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for n in names
                          if n == "mtl_edge.devbed" or n.startswith("mtl_edge.devbed.")]
    assert offenders == []


def test_devbed_commands_still_load_on_use():
    done = subprocess.run([sys.executable, "-m", "mtl_edge", "devbed", "--help"], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert all(command in done.stdout for command in ("up", "down", "status", "Emulated device test beds"))
    listing = subprocess.run([sys.executable, "-m", "mtl_edge", "--help"], capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
    assert listing.returncode == 0 and "devbed" in listing.stdout
    assert "mtl_edge.devbed.cli" not in _loaded_after("import mtl_edge.cli; mtl_edge.cli.app  # registered, not loaded")
