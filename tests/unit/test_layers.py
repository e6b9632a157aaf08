"""The package's stages import only what comes before them (docs/architecture.md, module map).

Data flows source → plan → write → bundle/output → local | cloud → pennsieve. A stage never
imports one that depends on it: ``source`` knows nothing of the plan, the writers or the bundle;
``output`` (where bytes land) knows nothing of NWB; the command line never reaches into the
Lambda side, nor the Lambda side into the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nwb2pennsieve

PACKAGE = Path(nwb2pennsieve.__file__).parent
FOUNDATION = {"errors", "options", "signals", "testing_seams"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "options": set(),
    "signals": {"errors"},
    "testing_seams": set(),
    "__main__": {"signals", "testing_seams", "local"},  # the command's entry: the stop signals first, then the command
    "settings": FOUNDATION,
    "source": FOUNDATION,
    "output": FOUNDATION,
    "plan": FOUNDATION | {"source", "output"},
    "bundle": FOUNDATION | {"source", "plan", "output"},
    "write": FOUNDATION | {"source", "plan", "output", "bundle"},
    "pennsieve": FOUNDATION | {"settings", "plan", "output"},
    "local": FOUNDATION | {"settings", "source", "plan", "output", "bundle", "write", "pennsieve"},
    "cloud": FOUNDATION | {"settings", "source", "plan", "output", "bundle", "write", "pennsieve"},
}


def stage_of(module: str) -> str:
    """``nwb2pennsieve.plan.items`` → ``plan``; the package's own ``__init__`` → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(path: Path, module: str) -> set[str]:
    """Every ``nwb2pennsieve...`` module the file imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module else [target]
            found.update(n for n in names if n.startswith("nwb2pennsieve"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nwb2pennsieve"))
    return found


def test_every_stage_imports_only_the_stages_before_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        stage = stage_of(module)
        if not stage:
            continue
        assert stage in ALLOWED, f"{module}: a stage the layering does not know"
        for target in imported_modules(path, module):
            other = stage_of(target)
            if target == "nwb2pennsieve.__version__":  # the package's own version
                continue
            if other and other != stage and other not in ALLOWED[stage]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The walk above resolves relative imports: a source module importing the writer is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..write.execute import execute_item\nfrom . import nwb\n")
    targets = imported_modules(bad, "nwb2pennsieve.source.bad")
    assert targets == {"nwb2pennsieve.write.execute", "nwb2pennsieve.source.nwb"}
    assert "write" not in ALLOWED["source"]
