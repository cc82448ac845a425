"""Which data directory a process uses, so `serve` and every other command find the same database.

The rule, in order:
1. `DISPATCHER_DATA_DIR` when it is set;
2. else the nearest `var/` holding an embedded database, in the current directory or one of its
   parents (as git finds `.git`), so commands work from anywhere inside the project;
3. else `./var`, where `serve` and `migrate` create the database. Other commands never create one.
"""

from __future__ import annotations

from pathlib import Path

from dispatcher.settings import Settings

DEFAULT = Path("var")


def has_embedded_database(data_dir: Path) -> bool:
    """Whether `data_dir` holds an initialised embedded PostgreSQL (initdb writes PG_VERSION last-ish
    and it never goes away), without starting or creating anything."""
    return (data_dir / "postgres" / "PG_VERSION").is_file()


def find(settings: Settings, cwd: Path | None = None) -> Settings:
    """`settings` with `data_dir` resolved by the rule above, as an absolute path."""
    if "data_dir" in settings.model_fields_set:
        return settings.model_copy(update={"data_dir": settings.data_dir.absolute()})
    here = (cwd or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        if has_embedded_database(directory / DEFAULT):
            return settings.model_copy(update={"data_dir": directory / DEFAULT})
    return settings.model_copy(update={"data_dir": here / DEFAULT})
