"""Imports point down only (DESIGN.md): cli/runtime → api → domain → delivery → infrastructure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dispatcher"
INFRASTRUCTURE = {
    "db",
    "settings",
    "logs",
    "crypto",
    "ids",
    "errors",
    "metrics",
    "loop",
    "jsontext",
    "inputs",
    "watchdog",
    "partitions",
    "__version__",
}
DOMAIN = {
    "events", "callbacks", "handshake", "accounts", "sending", "retention", "commands", "status", "group_commit",
    "suppressions", "oauth", "assets", "sessions", "activity", "filters",
}  # fmt: skip


def imported(path: Path) -> set[str]:
    """Top-level dispatcher modules a file imports (`dispatcher.x.y` and `from dispatcher import x` give x)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dispatcher"):
            parts = node.module.split(".")
            names |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dispatcher.")}
    return names


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        ("delivery", INFRASTRUCTURE | {"delivery"}),
        ("sending", INFRASTRUCTURE | {"sending", "events", "delivery"}),
        ("inbound", INFRASTRUCTURE | DOMAIN | {"inbound", "delivery"}),
        ("api", INFRASTRUCTURE | DOMAIN | {"api", "delivery", "inbound"}),
    ],
)
def test_a_layer_imports_only_what_is_below_it(layer: str, allowed: set[str]) -> None:
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        assert imported(path) - allowed == set(), path.name


def test_the_domain_never_imports_the_api_or_the_process_composition() -> None:
    for name in sorted(DOMAIN - {"sending"}):
        path = PACKAGE / f"{name}.py"
        assert imported(path) & {"api", "runtime", "cli", "supervisor"} == set(), path.name
