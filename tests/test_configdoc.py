"""docs/configuration.md is generated from the settings class, and this module fails when it is stale.

To regenerate it: ``make docs`` (``.venv/bin/rosetta-jobs config-docs --output docs/configuration.md``).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from rosetta_jobs import configdoc
from rosetta_jobs.cli import main
from rosetta_jobs.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / configdoc.DOC_PATH
REGENERATE = "run `make docs` (or .venv/bin/rosetta-jobs config-docs --output docs/configuration.md) and commit it"


def test_configuration_doc_is_current() -> None:
    # Given the committed reference and the settings class as it is now
    committed = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    # When the reference is rendered again
    rendered = configdoc.render()
    # Then nothing differs
    assert committed == rendered, f"{configdoc.DOC_PATH} is stale: {REGENERATE}"


def test_every_setting_and_every_name_is_in_the_doc() -> None:
    text = configdoc.render()
    for name, info in Settings.model_fields.items():
        # Every setting has something to say ...
        assert configdoc.description(name, info), f"Settings.{name} has no description: add description= to it"
        # ... and every name it is read from is listed
        for env in configdoc.env_names(name, info):
            assert f"`{env}`" in text, f"{env} (Settings.{name}) is missing from the generated doc"


def test_fallback_descriptions_do_not_shadow_or_outlive_fields() -> None:
    fields = Settings.model_fields
    for name in configdoc._DESCRIPTIONS:
        # A fallback for a field that no longer exists, or that now has its own description, is dead text
        assert name in fields, f"configdoc._DESCRIPTIONS has {name!r}, which is not a setting any more"
        assert not fields[name].description, f"Settings.{name} now has a description: drop it from _DESCRIPTIONS"


def test_every_validated_field_says_what_it_accepts() -> None:
    # Given the fields whose rule lives in a field validator (code the generator cannot read)
    validated = {
        field
        for decorator in Settings.__pydantic_decorators__.field_validators.values()
        for field in decorator.info.fields
    }
    for name in validated:
        annotation = Settings.model_fields[name].annotation
        is_literal = typing.get_origin(annotation) is typing.Literal
        # Then the generator has a note for it (a Literal field lists its choices by itself)
        assert name in configdoc._FORMATS or is_literal, f"add a note for Settings.{name} to configdoc._FORMATS"


def test_constraints_come_from_the_field_metadata() -> None:
    fields = Settings.model_fields
    assert configdoc.constraint("preview_row_limit", fields["preview_row_limit"]) == "integer; 1 ≤ value ≤ 50000"
    assert configdoc.constraint("preview_time_limit", fields["preview_time_limit"]) == "number; 0 < value"
    assert "`^[A-Za-z0-9_.-]+$`" in configdoc.constraint("broker_namespace", fields["broker_namespace"])
    assert configdoc.constraint("log_format", fields["log_format"]).startswith("one of `json`, `console`")
    assert configdoc.default_text(fields["credential_encryption_key"]) == "unset"
    assert configdoc.default_text(fields["preview_time_limit"]) == "`120`"


def test_celery_mapping_points_at_names_the_setting_really_reads() -> None:
    fields = Settings.model_fields
    for var in configdoc.CELERY_WORKER_ENV:
        if var.setting is None:
            assert var.note, f"{var.name} is ignored: say why in its note"
            assert not any(var.name in configdoc.env_names(n, f) for n, f in fields.items()), (
                f"{var.name} is read by a setting but listed as ignored"
            )
        else:
            # The mapping is only true if the setting is read from that very name
            assert var.name in configdoc.env_names(var.setting, fields[var.setting]), var


def test_nothing_reads_the_environment_outside_the_settings() -> None:
    # Given every os.getenv / os.environ read in the package (configdoc's own docstring aside)
    package = ROOT / "src" / "rosetta_jobs"
    read: set[str] = set()
    for path in package.rglob("*.py"):
        if path.name == "configdoc.py":
            continue
        read |= set(re.findall(r"""os\.(?:getenv|environ\.get)\(\s*["']([A-Z0-9_]+)""", path.read_text()))
        read |= set(re.findall(r"""os\.environ\[\s*["']([A-Z0-9_]+)""", path.read_text()))
    # Then only TZ is read (the process zone, WORKER_TIMEZONE's default): every knob is a setting,
    # so .env and docs/configuration.md cover it
    assert read <= {"TZ"}, f"read outside Settings: {sorted(read - {'TZ'})}; make them Settings fields"


def test_cli_writes_and_checks_the_doc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "configuration.md"
    # Given a stale copy of the doc
    target.write_text(configdoc.render().replace("BROKER_URL", "BROKER_ADDRESS"), encoding="utf-8")
    # When it is checked, Then the check fails and says how to fix it
    assert main(["config-docs", "--output", str(target), "--check"]) == 1
    assert "make docs" in capsys.readouterr().err
    # When it is written, Then it is current
    assert main(["config-docs", "--output", str(target)]) == 0
    assert main(["config-docs", "--output", str(target), "--check"]) == 0
    assert target.read_text(encoding="utf-8") == configdoc.render()
    # And without --output the doc goes to stdout
    assert main(["config-docs"]) == 0
    assert capsys.readouterr().out == configdoc.render()
