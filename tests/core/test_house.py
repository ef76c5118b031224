"""The house: one namespaced install, and imports that only run down the layers.

``schemas`` (the contract) is the ground; ``bus`` (transport) and ``skills`` stand on it; the
three agents stand side by side on those; the product package ``robobus`` (CLI, launcher, test
kit) is the only one that may import anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: folder -> the robobus subpackages its modules may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "bus": {"schemas", "bus"},
    "skills": {"schemas", "skills"},
    "brain_agent": {"schemas", "bus", "skills", "brain_agent"},
    "edge_agent": {"schemas", "bus", "skills", "edge_agent"},
    "memory_store": {"schemas", "bus", "memory_store"},
}


def _imported(path: Path) -> set[str]:
    """The robobus subpackages a module imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                 else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "robobus":
                found.add(parts[1] if len(parts) > 1 else "robobus")
            elif parts[0] in ALLOWED:  # a bare top-level import of a folder: never valid
                found.add(f"<bare {parts[0]}>")
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_run_down_the_layers_only(folder: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_imported(path) - ALLOWED[folder])
        for path in sorted((ROOT / folder).rglob("*.py"))
        if _imported(path) - ALLOWED[folder]
    }
    assert wrong == {}, f"{folder}/ may import only {sorted(ALLOWED[folder])}"


def test_bench_never_touches_sys_path() -> None:
    offenders = [p.name for p in sorted((ROOT / "bench").glob("*.py")) if "sys.path" in p.read_text()]
    assert offenders == []


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60, cwd=ROOT / "tests")
    return set(out.stdout.split())


def test_the_contract_loads_neither_transport_nor_storage() -> None:
    loaded = _loaded_after("import robobus.schemas, robobus.schemas.world, robobus.schemas.scenario")
    heavy = {m for m in loaded if m.split(".")[0] in {"zmq", "lmdb", "paho", "torch"}
             or m.startswith(("robobus.bus", "robobus.memory_store", "robobus.skills"))}
    assert heavy == set()


def test_skills_do_not_load_lmdb() -> None:
    loaded = _loaded_after("import robobus.skills, robobus.skills.sim")
    assert "lmdb" not in loaded
    assert not any(m.startswith("robobus.memory_store") for m in loaded)


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    (wheel,) = tmp_path.glob("robobus-*.whl")
    dist = "-".join(wheel.name.split("-")[:2])
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (entry_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry = zf.read(entry_file).decode()
    assert {n.split("/")[0] for n in names} == {"robobus", f"{dist}.dist-info", f"{dist}.data"}
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    for sub in ("bus", "bus/backends", "schemas", "skills", "brain_agent", "brain_agent/planners",
                "brain_agent/llm", "edge_agent", "memory_store", "cli", "launch"):
        assert f"robobus/{sub}" in packages
    assert "robobus/__main__.py" in names
    assert "robobus = robobus.cli.main:main" in entry
    assert "sim = robobus.skills.sim" in entry


def test_python_dash_m_robobus_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "robobus", "--version"], capture_output=True,
                         text=True, check=True, timeout=60, cwd=ROOT / "tests")
    assert out.stdout.strip().startswith("robobus ")
