"""Docs derived from code stay current."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_gen_docs() -> Any:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _load_gen_docs()


def test_cli_reference_is_current() -> None:
    assert gen_docs.CLI_DOC.read_text() == gen_docs.render_cli(), (
        "docs/cli.md is stale: run python scripts/gen_docs.py"
    )


def test_readme_settings_table_is_current() -> None:
    readme = gen_docs.README.read_text()
    assert gen_docs.readme_with_settings(readme) == readme, (
        "README settings table is stale: run python scripts/gen_docs.py"
    )


def test_readme_names_the_commands_it_promises() -> None:
    readme = gen_docs.README.read_text()
    assert "pip install -e '.[test]' && scripts/test" in readme
    assert "waquality serve" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci
