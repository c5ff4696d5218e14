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


def project_files(suffix: str = ".py", packages: Iterable[str] = PACKAGES) -> Iterator[tuple[str, str]]:
    for package in packages:
        for file in sorted((ROOT / package).rglob(f"*{suffix}")):
            if "__pycache__" not in file.parts:
                yield file.relative_to(ROOT).as_posix(), file.read_text()


def project_imports() -> list[Import]:
    return [found for path, source in project_files() for found in imports_of(source, path)]


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
            f"{found.path}:{found.line} [{self.name}] imports {found.target}: {self.why}"
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
    found = imports_of(source, path)
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
    }
    assert set(cases) == set(RULES)
    for name, (source, path) in cases.items():
        assert any(f"[{name}]" in v for v in check(source + "\n", path)), name


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
