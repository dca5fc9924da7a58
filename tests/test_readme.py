"""The README and the docs are part of the interface: their commands, make targets and settings
must exist, and the settings table is generated from the settings model itself."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from arinext.cli import build_parser
from arinext.service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOC_PAGES = sorted((ROOT / "docs").rglob("*.md"))
# The README and every page of the documentation site, as one text.
DOCS = "\n".join([README, *(page.read_text(encoding="utf-8") for page in DOC_PAGES)])


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.S)


def _commands(text: str) -> list[str]:
    """Shell command lines of the README's ``sh`` blocks, continuation lines joined."""
    lines: list[str] = []
    for block in _shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def _arinext_argv(line: str) -> list[str] | None:
    """The arguments given to ``arinext`` (directly or via ``-m arinext``) on a line; a shell
    variable (``--fold $k`` in a loop) stands for a number."""
    words = shlex.split(re.sub(r"\$\{?[A-Za-z_]\w*\}?", "1", line))
    for i, word in enumerate(words):
        if word == "arinext":
            return words[i + 1 :]
        if word == "arinext" and i > 0 and words[i - 1] == "-m":
            return words[i + 1 :]
    return None


ARINEXT_LINES = [line for line in _commands(DOCS) if _arinext_argv(line) is not None]


def test_the_docs_have_arinext_commands() -> None:
    used = {_arinext_argv(line)[0] for line in ARINEXT_LINES}
    assert {"serve", "train", "evaluate", "export", "import-checkpoint"} <= used


@pytest.mark.parametrize("line", ARINEXT_LINES)
def test_every_arinext_command_in_the_docs_parses(line: str) -> None:
    argv = _arinext_argv(line)
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_inline_arinext_commands_exist() -> None:
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    mentioned = set(re.findall(r"`arinext ([a-z][a-z-]+)", DOCS))
    assert mentioned <= subcommands, mentioned - subcommands


def test_make_targets_in_the_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    mentioned = set(re.findall(r"`make ([a-z][a-z-]*)", DOCS))
    mentioned |= {shlex.split(line)[1] for line in _commands(DOCS) if line.startswith("make ")}
    assert {"serve", "test"} <= mentioned
    assert mentioned <= targets, mentioned - targets


def test_readme_starts_with_the_serve_and_test_commands() -> None:
    first_block = _shell_blocks(README)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make serve",
        "make test",
    ]


def test_the_readme_is_a_two_minute_read() -> None:
    assert len(README.splitlines()) <= 200
    assert "## Tour" in README and ". .venv-serve/bin/activate" in README


def _settings_table() -> dict[str, str]:
    """The generated settings table (docs/hooks.py): variable -> default as documented."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from hooks import MARKER, on_page_markdown
    finally:
        sys.path.remove(str(ROOT / "docs"))
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert MARKER in page
    table = on_page_markdown(page, page=None)
    rows = re.findall(r"^\| `(ARINEXT_[A-Z_]+)` \| (.*?) \| (.*?) \|$", table, flags=re.M)
    assert all(meaning for _, _, meaning in rows), "every setting needs a description"
    return {name: default.strip("` ") for name, default, _ in rows}


def test_every_setting_is_documented_and_every_documented_variable_exists() -> None:
    fields = {f"ARINEXT_{name.upper()}" for name in Settings.model_fields}
    mentioned = set(re.findall(r"ARINEXT_[A-Z_]+[A-Z]", DOCS))
    assert mentioned <= fields, mentioned - fields
    assert set(_settings_table()) == fields


def test_documented_defaults_are_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("ARINEXT_"):
            monkeypatch.delenv(name)
    settings = Settings()
    for variable, documented in _settings_table().items():
        value = getattr(settings, variable.removeprefix("ARINEXT_").lower())
        if variable == "ARINEXT_MODELS":
            assert value == [] and documented == "(empty)"
        elif variable == "ARINEXT_DEFAULT_MODEL_DIR":
            assert value == ROOT / "service" / "default_model"
            assert value.resolve() == ROOT / "artifacts" / "speech-commands-b0-int8"
        elif value is None:  # ARINEXT_DEMO, ARINEXT_MODEL_REPOSITORY, ARINEXT_REPOSITORY_TOKEN
            assert documented == "(unset)", variable
        elif isinstance(value, list):
            assert ",".join(value) == documented or (not value and documented == "(empty)")
        elif isinstance(value, bool):
            assert str(value).lower() == documented
        elif isinstance(value, float):
            assert value == float(documented), variable
        else:
            assert str(value) == documented, variable


def test_env_variables_behave_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARINEXT_MODELS", "artifacts/a, artifacts/b")
    monkeypatch.setenv("ARINEXT_DEMO", "false")
    monkeypatch.setenv("ARINEXT_QUEUE_SIZE", "7")
    settings = Settings()
    assert settings.models == [Path("artifacts/a"), Path("artifacts/b")]
    assert settings.model_dirs() == [Path("artifacts/a"), Path("artifacts/b")]
    assert settings.demo is False
    assert settings.queue_size == 7
