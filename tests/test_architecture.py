"""The layer order of docs/architecture.md holds: every posttrain import points down.

The layer table is read from docs/architecture.md (its one home). Every module under
src/posttrain/ is parsed with ``ast``; each of its posttrain imports, at module level or inside a
function, must name its own package or a package of a lower layer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DOC = REPO / "docs" / "architecture.md"
MARKER = "<!-- layer table"
ROOT = "posttrain"


def layer_table() -> dict[str, tuple[int, str]]:
    """``{module or package: (layer, package name)}`` from the doc's table."""
    lines = DOC.read_text(encoding="utf-8").split(MARKER, 1)[1].splitlines()[1:]
    table = {}
    for line in lines:
        if not line.startswith("|"):
            if table:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not cells[0].isdigit():  # the header and the separator row
            continue
        for name in re.findall(r"`([\w.]+)`", cells[2]):
            assert name not in table, f"docs/architecture.md lists {name} twice"
            table[name] = (int(cells[0]), cells[1])
    assert table, "docs/architecture.md has no layer table"
    return table


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module under src/posttrain."""
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()
TABLE = layer_table()


def layer_of(module: str) -> tuple[int, str] | None:
    """The longest table entry that is ``module`` or a package holding it (``posttrain`` holds
    only itself: a module missing from the table must not fall into the core layer)."""
    entries = [name for name in TABLE if module == name or (name != ROOT and module.startswith(name + "."))]
    return TABLE[max(entries, key=len)] if entries else None


def posttrain_imports(module: str, path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every posttrain import in the file, wherever it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == ROOT]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:  # `from posttrain.x import y` imports the module posttrain.x.y if there is one
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else target))
    return list(dict.fromkeys(found))  # one entry per imported module and line


def test_the_table_names_every_module_and_only_modules_that_exist():
    missing = [module for module in MODULES if layer_of(module) is None]
    assert not missing, f"modules in no layer of docs/architecture.md: {', '.join(missing)}"
    stale = [name for name in TABLE if name not in MODULES]
    assert not stale, f"docs/architecture.md lists modules that do not exist: {', '.join(stale)}"


def test_imports_point_down():
    violations = []
    for module, path in MODULES.items():
        layer, package = layer_of(module)
        for line, imported in posttrain_imports(module, path):
            if imported not in MODULES:
                violations.append(f"{path.relative_to(REPO)}:{line}: {module} imports {imported}, which does not exist")
                continue
            their_layer, their_package = layer_of(imported)
            if their_package == package or their_layer < layer:
                continue
            where = "a higher layer" if their_layer > layer else "another package of its layer"
            violations.append(
                f"{path.relative_to(REPO)}:{line}: {module} (layer {layer}, {package}) imports {imported} "
                f"(layer {their_layer}, {their_package}): {where}"
            )
    assert not violations, "imports against docs/architecture.md's layer order:\n" + "\n".join(violations)


def top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def test_the_registry_points_at_the_commands_package():
    """Every command's config and run live in (or are re-exported from) posttrain.commands.<module>."""
    from posttrain.registry import COMMANDS

    wrong = []
    for command in COMMANDS.values():
        for path in (command.config_path, command.run_path):
            module, _, name = path.partition(":")
            if not module.startswith("posttrain.commands.") or module not in MODULES:
                wrong.append(f"{command.name}: {path} is not a module of posttrain.commands")
            elif name not in top_level_names(MODULES[module]):
                wrong.append(f"{command.name}: {module} has no top-level {name}")
    assert not wrong, "\n".join(wrong)
