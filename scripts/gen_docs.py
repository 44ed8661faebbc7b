"""Regenerate the docs that are derived from code: docs/cli.md (every command's --help) and
the settings table in README.md. ``tests/test_docs.py`` fails when either is stale."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import click
from click.testing import CliRunner

from waquality.cli import main
from waquality.config import PREFIX, SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
README = ROOT / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    found = [prefix]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found += _commands(command, [*prefix, name])
        else:
            found.append([*prefix, name])
    return found


def render_cli() -> str:
    runner = CliRunner()
    parts = [
        "# Command-line reference",
        "",
        "Generated from `--help` by `python scripts/gen_docs.py`; do not edit by hand.",
        "",
    ]
    for path in _commands(main, []):
        result = runner.invoke(main, [*path, "--help"], prog_name="waquality", terminal_width=100)
        title = " ".join(["waquality", *path])
        parts += [f"## `{title}`", "", "```", result.output.rstrip(), "```", ""]
    return "\n".join(parts)


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _default(value: object) -> str:
    if isinstance(value, timedelta):
        return f"`{_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list) and value:
        return (
            "`"
            + ",".join(_duration(v) if isinstance(v, timedelta) else str(v) for v in value)
            + "`"
        )
    if value is None or value in ([], {}) or repr(value) == "PydanticUndefined":
        return "—"
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return f"`{text}`"


def render_settings() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        variable = f"`{PREFIX}{name.upper()}`"
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("config_file_only"):
            variable = f"`{name}` (config file)"
        elif name in SECRET_FIELDS:
            variable += f" (or `{PREFIX}{name.upper()}_FILE`)"
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        rows.append(f"| {variable} | {_default(default)} | {field.description} |")
    return "\n".join(rows)


def readme_with_settings(readme: str) -> str:
    block = f"{START}\n{render_settings()}\n{END}"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)


if __name__ == "__main__":
    CLI_DOC.write_text(render_cli())
    README.write_text(readme_with_settings(README.read_text()))
    sys.stdout.write("wrote docs/cli.md and the settings table in README.md\n")
