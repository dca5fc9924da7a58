"""MkDocs hook: the settings page's table, generated from ``arinext.service.settings.Settings``.

``docs/settings.md`` holds the marker ``<!-- settings-table -->``; this hook replaces it with one
row per field (environment variable, default, description), so the table cannot go stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- settings-table -->"


def _default(name: str, value: Any) -> str:
    """A field's default as a user would write the variable."""
    if name == "default_model_dir":
        return "`<package>/service/default_model`"
    if value is None or value == []:
        return "(unset)" if value is None else "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{','.join(str(v) for v in value)}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value}`"


def settings_table() -> str:
    """The markdown table of every server setting, in the model's order."""
    from arinext.service.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `ARINEXT_{name.upper()}` | {_default(name, default)} | {meaning} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Fill the marker in ``settings.md``; leave every other page alone."""
    if MARKER in markdown:
        return markdown.replace(MARKER, settings_table())
    return markdown
