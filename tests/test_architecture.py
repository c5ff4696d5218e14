"""The import rules of the layout (README, "Architecture"), read from the code with ``ast``, never with grep.

Every ``import`` and ``from … import`` of every module in the project's packages is collected — at module level,
inside functions and under ``if TYPE_CHECKING:`` alike — with relative imports resolved to absolute module names.
Each rule names the files it governs and the modules they must not import; a violation is reported as
``file:line [rule] message`` so the fix starts at the right line. The checker's own tests (below, on small synthetic
sources) prove that it catches what it should, so the rules cannot pass by checking nothing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "adapters", "ledger", "loadtest", "toolkit", "benchmarks")
FIRST_PARTY = frozenset((*PACKAGES, "tests"))

# ---- reading the imports -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported name: ``target`` is the absolute dotted name as far as the statement spells it (``from a.b
    import c`` gives ``a.b.c``, which is either the module ``a.b.c`` or the name ``c`` of ``a.b``)."""

    path: str  # relative to the project root, with forward slashes
    line: int
    target: str
    verb: str = "imports"  # "uses" for a name reached through an import (``aiohttp.web.Application``, ``sys.exit``)


def module_name(path: str) -> str:
    """``engine/pipeline/charging.py`` → ``engine.pipeline.charging``; a package's ``__init__.py`` is the package."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve_relative(path: str, level: int, module: str | None) -> str:
    """The absolute module a ``from <dots><module> import`` in ``path`` names."""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]  # a plain module's package is its folder
    if level - 1 > len(package) - 1:
        raise ValueError(f"{path}: relative import beyond the top-level package")
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def imports_of(source: str, path: str) -> list[Import]:
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(path, node.level, node.module) if node.level else (node.module or "")
            for alias in node.names:
                found.append(Import(path, node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"))
    return found


BUILTINS_JUDGED = ("SystemExit", "exit", "quit")  # the builtins that end the process


def _bindings(tree: ast.AST, path: str) -> dict[str, str]:
    """The local names the module's imports bind, each to the absolute dotted name it stands for."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b`` binds ``a``; ``import a.b as c`` binds ``c`` to ``a.b``
                bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else top(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(path, node.level, node.module) if node.level else (node.module or "")
            for alias in node.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def uses_of(source: str, path: str) -> list[Import]:
    """The names a module reaches through its imports (``import aiohttp`` then ``aiohttp.web.Response``), as far as
    the attribute chain spells them, and the process-ending builtins it names: an import rule cannot be dodged by
    importing the parent package and walking down to the forbidden part."""
    tree = ast.parse(source, filename=path)
    bound = _bindings(tree, path)
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            parts = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                found.append(Import(path, node.lineno, ".".join([bound[value.id], *reversed(parts)]), "uses"))
        elif isinstance(node, ast.Name) and id(node) not in inner:
            if node.id in bound:
                found.append(Import(path, node.lineno, bound[node.id], "uses"))
            elif node.id in BUILTINS_JUDGED:
                found.append(Import(path, node.lineno, f"builtins.{node.id}", "uses"))
    return found


def project_files(suffix: str = ".py", packages: Iterable[str] = PACKAGES) -> Iterator[tuple[str, str]]:
    for package in packages:
        for file in sorted((ROOT / package).rglob(f"*{suffix}")):
            if "__pycache__" not in file.parts:
                yield file.relative_to(ROOT).as_posix(), file.read_text()


def project_imports() -> list[Import]:
    return [found for path, source in project_files() for found in (*imports_of(source, path), *uses_of(source, path))]


# ---- the rules ---------------------------------------------------------------------------------------------------


def within(name: str, *prefixes: str) -> bool:
    """``name`` is one of the dotted ``prefixes`` or something inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def top(name: str) -> str:
    return name.split(".", 1)[0]


@dataclass(frozen=True)
class Rule:
    name: str
    governs: Callable[[str], bool]  # the importing file's path
    forbids: Callable[[str], bool]  # the imported target
    why: str

    def violations(self, imports: Iterable[Import]) -> list[str]:
        return [
            f"{found.path}:{found.line} [{self.name}] {found.verb} {found.target}: {self.why}"
            for found in imports
            if self.governs(found.path) and self.forbids(found.target)
        ]


def under(*folders: str) -> Callable[[str], bool]:
    return lambda path: any(path.startswith(folder.rstrip("/") + "/") for folder in folders)


# Where HTTP is served from (aiohttp.web): the API, the app's assembly and the server. The simulated and Stripe
# adapters have no webhook or token server of their own today (their webhooks are received by engine/api), so none
# is listed; the echo server is the HTTP baseline of the benchmarks, serving being its whole job.
HTTP_SERVING_ALLOWED = ("engine/app.py", "benchmarks/echo_server.py")


def may_serve_http(path: str) -> bool:
    return (
        path.startswith("engine/api/")
        or path in HTTP_SERVING_ALLOWED
        or (path.startswith("engine/serve") and "/" not in path.removeprefix("engine/"))
    )


# engine.api is the HTTP edge: assembled into the app by engine/app.py (and served by engine/serve*.py), imported by
# no domain module — the CLI, the pipeline, payments and finance return outcomes for the edge to translate.
API_IMPORT_ALLOWED = ("engine/app.py",)


def may_import_api(path: str) -> bool:
    return (
        not path.startswith("engine/")
        or path.startswith("engine/api/")
        or path in API_IMPORT_ALLOWED
        or (path.startswith("engine/serve") and "/" not in path.removeprefix("engine/"))
    )


# Only the command line turns outcomes into exit codes: the CLI modules, the chaos rehearsal's worker process (a
# command of its own, `python -m loadtest.chaos.worker`) and the benchmarks (each one a `python -m` command).
EXIT_ALLOWED = (
    "engine/__main__.py",
    "engine/cli.py",
    "engine/finance/cli.py",
    "loadtest/cli.py",
    "loadtest/chaos/worker.py",
)
PROCESS_EXITS = ("sys.exit", "os._exit", "builtins.SystemExit", "builtins.exit", "builtins.quit")


def may_exit(path: str) -> bool:
    return path in EXIT_ALLOWED or path.startswith("benchmarks/")


ADAPTERS_MAY_USE_FROM_LEDGER = ("ledger.money", "ledger.currencies", "ledger.batcher")

RULES = {
    rule.name: rule
    for rule in (
        Rule(
            "ledger-knows-only-itself",
            under("ledger"),
            lambda target: top(target) in FIRST_PARTY - {"ledger", "toolkit"},
            "ledger/ imports only ledger and toolkit (and the standard library and third parties)",
        ),
        Rule(
            "adapters-know-no-engine",
            under("adapters"),
            lambda target: top(target) in {"engine", "loadtest", "benchmarks", "tests"},
            "adapters/ import nothing from engine/ or loadtest/",
        ),
        Rule(
            "adapters-take-only-value-types-from-ledger",
            under("adapters"),
            lambda target: top(target) == "ledger" and not within(target, *ADAPTERS_MAY_USE_FROM_LEDGER),
            f"adapters/ take from ledger/ only {', '.join(ADAPTERS_MAY_USE_FROM_LEDGER)}",
        ),
        Rule(
            "engine-does-not-import-loadtest",
            under("engine"),
            lambda target: top(target) == "loadtest",
            "engine/ never imports loadtest/ (surge loadtest is a surge.commands plug-in)",
        ),
        Rule(
            "toolkit-knows-no-package",
            under("toolkit"),
            lambda target: top(target) in FIRST_PARTY - {"toolkit"},
            "toolkit/ imports none of engine/, adapters/, ledger/, loadtest/",
        ),
        Rule(
            "only-the-api-serves-http",
            lambda path: not may_serve_http(path),
            lambda target: within(target, "aiohttp.web"),
            "aiohttp.web is imported only in engine/api/, engine/app.py, engine/serve*.py and "
            + ", ".join(HTTP_SERVING_ALLOWED[1:]),
        ),
        Rule(
            "only-the-app-imports-the-api",
            lambda path: not may_import_api(path),
            lambda target: within(target, "engine.api"),
            "engine.api (HTTP answers, ApiError) is imported in engine/ only by engine/api/, engine/app.py and "
            "engine/serve*.py: domain code returns outcomes",
        ),
        Rule(
            "only-the-cli-exits",
            lambda path: not may_exit(path),
            lambda target: target in PROCESS_EXITS,
            "only the command line (" + ", ".join(EXIT_ALLOWED) + ", benchmarks/) ends the process with an exit "
            "code: domain code returns outcomes",
        ),
    )
}


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return project_imports()


@pytest.mark.parametrize("name", list(RULES))
def test_import_rule(imports: list[Import], name: str) -> None:
    found = RULES[name].violations(imports)
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_the_rules_read_real_code(imports: list[Import]) -> None:
    """Not vacuous: every package is read, and cross-package imports are there to be judged."""
    assert {top(found.path.replace("/", ".")) for found in imports} == set(PACKAGES)
    assert len(imports) > 500
    assert any(found.path.startswith("adapters/") and top(found.target) == "ledger" for found in imports)
    assert any(found.path == "engine/app.py" and within(found.target, "engine.api") for found in imports)


# ---- the ledger reads only its own schema ------------------------------------------------------------------------

# The schemas of the other packages' migrations; ``simulated`` too, the adapter's name, lest a schema be named after it.
FOREIGN_SCHEMAS = ("surge", "finance", "simulator", "simulated")
FOREIGN_TABLE = re.compile(rf"\b(?:{'|'.join(FOREIGN_SCHEMAS)})\s*\.\s*\"?[a-z_]", re.IGNORECASE)


def docstrings(tree: ast.AST) -> set[int]:
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def foreign_tables_in_python(source: str, path: str) -> list[str]:
    """String constants (f-string parts too; not docstrings, which are prose) that name another package's table."""
    tree = ast.parse(source, filename=path)
    prose = docstrings(tree)
    return [
        f"{path}:{node.lineno} [ledger-reads-only-its-schema] names {match.group(0)!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
        for match in FOREIGN_TABLE.finditer(node.value)
    ]


def foreign_tables_in_sql(source: str, path: str) -> list[str]:
    found: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.split("--", 1)[0]
        found.extend(
            f"{path}:{number} [ledger-reads-only-its-schema] names {match.group(0)!r}"
            for match in FOREIGN_TABLE.finditer(code)
        )
    return found


def test_ledger_sql_names_only_the_ledger_schema() -> None:
    python = list(project_files(".py", ["ledger"]))
    sql = list(project_files(".sql", ["ledger"]))
    assert python and sql, "the ledger's modules and migrations should be found"
    found = [v for path, source in python for v in foreign_tables_in_python(source, path)]
    found += [v for path, source in sql for v in foreign_tables_in_sql(source, path)]
    assert not found, "the ledger reads another package's tables:\n" + "\n".join(found)


# ---- the checker itself ------------------------------------------------------------------------------------------


def check(source: str, path: str) -> list[str]:
    found = [*imports_of(source, path), *uses_of(source, path)]
    return [violation for rule in RULES.values() for violation in rule.violations(found)]


def test_a_forbidden_import_is_caught_with_its_file_line_and_rule() -> None:
    source = "import os\n\nfrom engine.pipeline import charging\n"
    assert check(source, "adapters/simulated/processor.py") == [
        "adapters/simulated/processor.py:3 [adapters-know-no-engine] imports engine.pipeline.charging: "
        "adapters/ import nothing from engine/ or loadtest/"
    ]


def test_allowed_imports_pass() -> None:
    assert (
        check("from ledger.money import Money\nimport ledger.batcher\nimport aiohttp\n", "adapters/stripe/x.py") == []
    )
    assert check("from engine.api import donations\nfrom aiohttp import web\n", "engine/app.py") == []
    assert check("from aiohttp import web\nfrom engine.api.errors import ApiError\n", "engine/serve_workers.py") == []
    assert check("from toolkit import migrations\nimport asyncpg\n", "ledger/check.py") == []
    assert check("from engine.api.errors import ApiError\n", "loadtest/run.py") == []


def test_imports_inside_functions_and_type_checking_blocks_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from adapters.base import Processor\n"
        "def later():\n"
        "    import engine.settings\n"
    )
    assert [v.split(" [")[0] for v in check(source, "ledger/reads.py")] == ["ledger/reads.py:3", "ledger/reads.py:5"]


def test_relative_imports_resolve_to_absolute_modules() -> None:
    assert [i.target for i in imports_of("from ..api.errors import ApiError\n", "engine/pipeline/charging.py")] == [
        "engine.api.errors.ApiError"
    ]
    assert [i.target for i in imports_of("from . import gate\n", "engine/pipeline/__init__.py")] == [
        "engine.pipeline.gate"
    ]
    assert [i.target for i in imports_of("from .money import *\n", "ledger/posting.py")] == ["ledger.money"]
    assert check("from ..api import errors\n", "engine/payments/refunds.py") != []
    assert check("from .. import accounts\n", "adapters/stripe/processor.py") == []  # adapters.accounts
    with pytest.raises(ValueError):
        imports_of("from ... import x\n", "ledger/posting.py")


def test_each_rule_catches_its_case() -> None:
    cases = {
        "ledger-knows-only-itself": ("from adapters import base", "ledger/reconcile.py"),
        "adapters-know-no-engine": ("import loadtest.run", "adapters/registry.py"),
        "adapters-take-only-value-types-from-ledger": ("from ledger.posting import post_entries", "adapters/x.py"),
        "engine-does-not-import-loadtest": ("from loadtest import cli", "engine/cli.py"),
        "toolkit-knows-no-package": ("from ledger.money import Money", "toolkit/migrations.py"),
        "only-the-api-serves-http": ("from aiohttp.web import Application", "engine/pipeline/intake.py"),
        "only-the-app-imports-the-api": ("from engine.api.errors import ApiError", "engine/finance/cli.py"),
        "only-the-cli-exits": ("import sys\nsys.exit(1)", "engine/pipeline/recovery.py"),
    }
    assert set(cases) == set(RULES)
    for name, (source, path) in cases.items():
        assert any(f"[{name}]" in v for v in check(source + "\n", path)), name


def test_http_reached_through_the_parent_package_is_caught() -> None:
    source = "import aiohttp\n\n\ndef answer():\n    return aiohttp.web.Response(text='ok')\n"
    assert [v.split(" [")[0] for v in check(source, "engine/payments/refunds.py")] == ["engine/payments/refunds.py:5"]
    assert check("import aiohttp as a\nx = a.web.json_response\n", "engine/finance/x.py") != []
    assert check("import aiohttp\nx = aiohttp.ClientSession\n", "engine/finance/x.py") == []  # a client: allowed
    assert check(source, "engine/api/x.py") == check(source, "engine/app.py") == check(source, "engine/serve.py") == []


def test_every_way_of_ending_the_process_is_caught_outside_the_cli() -> None:
    sources = (
        "import sys\nsys.exit(2)\n",
        "from sys import exit as leave\nleave(2)\n",
        "import os\nos._exit(1)\n",
        "raise SystemExit(3)\n",
        "exit(1)\n",
        "try:\n    pass\nexcept SystemExit:\n    pass\n",
    )
    for source in sources:
        assert any("[only-the-cli-exits]" in v for v in check(source, "engine/pipeline/x.py")), source
        assert check(source, "engine/cli.py") == check(source, "benchmarks/ledger.py") == [], source
    assert check("import sys\nsys.stdout.write('x')\n", "engine/pipeline/x.py") == []


def test_adapters_may_not_reach_the_ledger_through_its_package() -> None:
    # ``from ledger import Money`` runs ledger/__init__.py and whatever it imports: only the value modules are allowed.
    assert check("from ledger import Money\n", "adapters/base.py") != []
    assert check("from ledger import money\n", "adapters/base.py") == []


def test_foreign_tables_are_found_in_ledger_sql_but_not_in_prose() -> None:
    source = (
        '"""Reads surge.donations? Never: this docstring is prose."""\n'
        'QUERY = "SELECT * FROM ledger.entries JOIN surge.donations d ON true"\n'
        'OTHER = f"SELECT 1 FROM simulator.charges WHERE id = {1}"\n'
        'FILE = "finance report"\n'
    )
    assert [v.split(" [")[0] for v in foreign_tables_in_python(source, "ledger/x.py")] == [
        "ledger/x.py:2",
        "ledger/x.py:3",
    ]
    sql = "-- unlike surge.donations, ours\nSELECT * FROM ledger.postings;\nINSERT INTO finance.runs VALUES (1);\n"
    assert [v.split(" [")[0] for v in foreign_tables_in_sql(sql, "ledger/migrations/9.sql")] == [
        "ledger/migrations/9.sql:3"
    ]
