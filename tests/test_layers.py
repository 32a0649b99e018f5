"""The package's layers import downwards only (README, "Layout"), and importing it changes nothing global."""

import ast
import os
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "modgs_ns"

# Layer of each top-level part -> the parts it may import (besides itself). `scene` is the bottom;
# `data` and `preprocess` never import each other; only the edges (pipeline, configs, CLI) see both.
ALLOWED = {
    "scene": set(),
    "synth": {"scene"},
    "preprocess": {"scene", "synth"},
    "data": {"scene"},
    "model": {"scene", "data"},
    "schedulers": set(),
    "viewer_controls": set(),
    "cli": {"scene"},
    "pipeline": {"scene", "data", "model", "cli", "viewer_controls"},
    "configs": {"scene", "data", "model", "preprocess", "cli", "pipeline", "schedulers"},
    "eval": {"scene", "data", "model"},
    "render": {"scene", "data", "model"},
    "export": {"scene", "data", "model"},
    "scripts": {
        "scene",
        "synth",
        "preprocess",
        "data",
        "model",
        "eval",
        "render",
        "export",
        "cli",
        "configs",
        "pipeline",
    },
}


def _part(module_path: Path) -> str:
    rel = module_path.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def _imported_parts(path: Path) -> set:
    """Top-level modgs_ns parts named by the file's imports (module level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "modgs_ns" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_import_points_downwards():
    wrong = []
    files = [p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG]
    for path in files:
        part = _part(path)
        assert part in ALLOWED, f"{path}: part {part!r} has no layer in ALLOWED"
        for target in _imported_parts(path) - {part}:
            if target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(PKG)} imports modgs_ns.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    # The checker itself: an upward import written into a file is reported.
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from modgs_ns.preprocess.pairs import build_caches\n")
    assert "preprocess" in _imported_parts(bad) and "preprocess" not in ALLOWED["data"]


def test_importing_the_package_changes_nothing_global():
    code = (
        "import os, torch\n"
        "before = (list(map(str, torch.serialization.get_safe_globals())), os.environ['PATH'])\n"
        "import modgs_ns, modgs_ns.scene.caches\n"
        "after = (list(map(str, torch.serialization.get_safe_globals())), os.environ['PATH'])\n"
        "print(before == after)\n"
    )
    env = dict(os.environ, PATH="/usr/bin:/bin")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "True"


CONFIG_SUFFIXES = ("Config", "Args", "Params", "Distortion", "Spiral")


def _undocumented_fields(path: Path) -> list:
    """`Class.field` for every annotated field of a @dataclass not followed by a docstring."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        if not any("dataclass" in ast.unparse(d) for d in node.decorator_list):
            continue
        if not node.name.endswith(CONFIG_SUFFIXES):  # data records (FrameSet, Plane, ...) are not options
            continue
        body = node.body
        for i, stmt in enumerate(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and not stmt.target.id.startswith("_")
            ):
                nxt = body[i + 1] if i + 1 < len(body) else None
                if not (isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)):
                    out.append(f"{path.relative_to(PKG)}: {node.name}.{stmt.target.id}")
    return out


def test_every_config_field_is_documented():
    # tyro turns these docstrings into each flag's --help text.
    missing = [m for p in sorted(PKG.rglob("*.py")) for m in _undocumented_fields(p)]
    assert not missing, "\n".join(missing)
