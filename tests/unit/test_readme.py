"""The README stays true: every setting is documented, and the quick start is exactly two commands."""

from __future__ import annotations

import re
from pathlib import Path

from dispatcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    table = CONFIGURATION.split("| variable |", 1)[1]
    documented = set(re.findall(r"`(DISPATCHER_[A-Z_]+)`", table))
    missing = {f"DISPATCHER_{name.upper()}" for name in Settings.model_fields} - documented
    assert not missing


def test_quick_start_is_two_commands_that_the_makefile_provides():
    quick = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["make run", "make test"]
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_the_layout_block_names_every_module_and_the_directories_it_lists_exist():
    root = Path(__file__).resolve().parents[2]
    layout = README.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"[\w/]+\.(?:py|sql)\b", layout))
    modules = {p.name for p in (root / "dispatcher").rglob("*.py") if p.name != "__init__.py"}
    assert modules - {n.rsplit("/", 1)[-1] for n in named} == set()
    for directory in re.findall(r"^\s*([\w/]+)/\s", layout, re.MULTILINE):
        assert (root / directory).is_dir() or (root / "dispatcher" / directory).is_dir(), directory


def test_the_readme_narrates_no_development_history():
    """The README and docs/ describe the product as it is (STYLE.md); benchmark explanations live in
    bench/README.md."""
    for doc in [README, *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]:
        for word in ("we tried", "reverted", "no longer", "used to"):
            assert word not in doc.lower(), word
        # a work session, not a console session
        assert not re.search(r"\b(this|last|previous|earlier|next|later|that|work) session\b", doc.lower())


def test_the_readme_stays_a_short_users_document_and_its_links_to_docs_resolve():
    assert len(README.splitlines()) <= 570
    for target in re.findall(r"\]\((docs/[\w.-]+)\)", README):
        assert (ROOT / target).is_file(), target


def test_every_image_the_docs_show_is_in_docs_img():
    """`make screenshots` redraws them from the browser tests; a renamed view must not leave a hole."""
    shown = re.findall(r"!\[[^\]]*\]\((docs/img/[\w.-]+)\)", README)
    for doc in (ROOT / "docs").glob("*.md"):
        shown += [f"docs/{path}" for path in re.findall(r"!\[[^\]]*\]\((img/[\w.-]+)\)", doc.read_text())]
    assert len(shown) >= 4
    for path in shown:
        assert (ROOT / path).is_file(), path
