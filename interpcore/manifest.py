"""The run manifest (``run.json``) as pydantic models: the schema is declared once, here.

:func:`interpcore.report.validate_manifest` calls :func:`validate`, which returns the
manifest as plain dicts and lists with the optional keys filled in, or raises
:class:`~interpcore.report.ReportError` with one line naming the field and the problem
(pydantic's own multi-line report is translated; only its first error is shown).

Imported lazily (pydantic costs tens of milliseconds), so ``interp --help`` never pays for it.
Keys the schema does not name are kept as they are, at every level.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator


def _to_str(value) -> str:
    return value if isinstance(value, str) else os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _as_dict(value):
    # pydantic accepts a dict for a model, not any Mapping
    return dict(value) if isinstance(value, Mapping) and not isinstance(value, dict) else value


def _rows(value):
    if isinstance(value, (list, tuple)):
        return [list(r) if isinstance(r, (list, tuple)) else [r] for r in value]
    return value


Text = Annotated[str, BeforeValidator(_to_str)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value):
        return _as_dict(value)


class Table(_Model):
    title: Text = ""
    columns: list[Any] = []
    rows: Annotated[list[list[Any]], BeforeValidator(_rows)] = []

    @model_validator(mode="after")
    def _row_lengths(self):
        if self.columns:
            for k, r in enumerate(self.rows):
                if len(r) != len(self.columns):
                    raise ValueError(f"row {k + 1} has {len(r)} cells but there are "
                                     f"{len(self.columns)} columns")
        return self


class Section(_Model):
    title: Text | None = None  # filled by Manifest: "Section <n>"
    text: Text = ""
    figures: list[Text] = []
    tables: list[Table] = []


class Manifest(_Model):
    method: str = Field(min_length=1)
    title: Text | None = None  # filled: the method's name
    command: Text = ""
    created: Text = ""
    settings: dict[Any, Any] = {}
    inputs: list[Any] = []
    sections: list[Section] = []
    results: Any = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fill(self):
        if self.title is None:
            self.title = self.method
        for i, sec in enumerate(self.sections):
            if sec.title is None:
                sec.title = f"Section {i + 1}"
        return self


#: What each field must be, for the one-line error.
_EXPECTED = {
    "title": "a string",
    "command": "a string",
    "created": "a string",
    "settings": "an object (name -> value)",
    "inputs": "a list of paths or names",
    "sections": "a list",
    "text": "a string",
    "figures": "a list of paths",
    "tables": "a list",
    "columns": "a list of column names",
    "rows": "a list of rows",
}


def _title(item, fallback) -> str:
    title = item.get("title") if isinstance(item, Mapping) else None
    return str(title) if title not in (None, "") else str(fallback)


def _explain(err: dict, raw: Mapping) -> str:
    loc = list(err["loc"])
    if loc[:1] == ["method"]:
        return "the run manifest needs a 'method' string (e.g. \"splice\")"
    where, owner = "the run manifest's", "the run manifest"
    if loc[:1] == ["sections"] and len(loc) > 1 and isinstance(loc[1], int):
        i = loc[1]
        sec = raw["sections"][i]
        where = f"section {i + 1} ('{_title(sec, f'Section {i + 1}')}'):"
        owner = f"section {i + 1} of the run manifest"
        loc = loc[2:]
        if loc[:1] == ["tables"] and len(loc) > 1 and isinstance(loc[1], int):
            j = loc[1]
            where = f"section {i + 1} ('{_title(sec, f'Section {i + 1}')}'), table '{_title(sec['tables'][j], j + 1)}':"
            owner = f"section {i + 1}, table {j + 1}: a table"
            loc = loc[2:]
    if err["type"] == "value_error":
        return f"{where} {err['ctx']['error']}"
    got = type(err.get("input")).__name__
    if not loc:
        return f"{owner} must be an object, not {got}"
    field = loc[0]
    return f"{where} '{field}' must be {_EXPECTED.get(field, 'valid')}, not {got}"


def validate(manifest: Mapping) -> dict:
    """The manifest checked and normalised to plain dicts (raises ReportError)."""
    from .report import ReportError

    raw = dict(manifest)
    try:
        model = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ReportError(_explain(exc.errors()[0], raw)) from None
    return model.model_dump()
