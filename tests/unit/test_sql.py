"""The SQL files: every named query loads, and every one is used (dead queries rot unnoticed)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from dispatcher.db import queries

SQL_DIR = resources.files("dispatcher").joinpath("sql")
CONCEPTS = sorted(p.name.removesuffix(".sql") for p in SQL_DIR.iterdir() if p.name.endswith(".sql"))
SOURCE = "\n".join(p.read_text() for p in Path(str(resources.files("dispatcher"))).rglob("*.py"))


@pytest.mark.parametrize("concept", CONCEPTS)
def test_every_query_is_used_by_the_code_or_by_another_query(concept: str):
    text = "\n".join(SQL_DIR.joinpath(f"{c}.sql").read_text() for c in CONCEPTS)
    for name in queries(concept):
        used = f'"{name}"' in SOURCE or f"-- use: {concept}.{name}" in text  # SQL["name"], or a name in a table
        assert used, f"sql/{concept}.sql: {name} is not used"


def test_a_query_named_twice_is_refused(tmp_path, monkeypatch):
    import dispatcher.db as db

    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "twice.sql").write_text("-- name: a\nSELECT 1\n\n-- name: a\nSELECT 2\n")
    monkeypatch.setattr(db.resources, "files", lambda _: tmp_path)
    with pytest.raises(ValueError, match="twice"):
        db.queries("twice")


def test_named_blocks_are_the_only_content():
    for concept in CONCEPTS:
        first = SQL_DIR.joinpath(f"{concept}.sql").read_text().lstrip()
        assert re.match(r"-- name: \w+", first), concept


def test_schema_sql_is_the_current_schema_written_once():
    """schema.sql makes a new database in one go; upgrades live in the migration files."""
    from dispatcher import db

    text = re.sub(r"\$\$.*?\$\$", "", db.schema_sql(), flags=re.DOTALL)  # function bodies build partitions
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    assert not re.search(r"\bALTER\b|\bDO\b|\bIF (NOT )?EXISTS\b", code, re.IGNORECASE)
    assert f"INSERT INTO schema_version (version) VALUES ({db.SCHEMA_VERSION});" in code


def test_every_version_after_1_has_one_migration_that_says_whether_it_runs_beside_old_processes():
    from dispatcher import db

    found = db.migrations()
    assert list(found) == list(range(2, db.SCHEMA_VERSION + 1))
    for version, (name, text) in found.items():
        assert name.startswith(f"{version:04d}_"), name
        header = text.split("\n\n", 1)[0]
        assert header.startswith(f"-- {version:04d}: "), name
        assert re.search(r"^-- (NOT online|Online)\b", header, re.MULTILINE), name
