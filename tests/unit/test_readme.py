"""The README stays true: every setting is documented, and the quick start is exactly two commands."""

from __future__ import annotations

import re
from pathlib import Path

from dispatcher.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    documented = set(re.findall(r"`(DISPATCHER_[A-Z_]+)`", README))
    missing = {f"DISPATCHER_{name.upper()}" for name in Settings.model_fields} - documented
    assert not missing


def test_quick_start_is_two_commands_that_the_makefile_provides():
    quick = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["make run", "make test"]
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
