"""The docs cannot drift: docs/configs.md's key tables match the config schema, and every relative link in
README.md and docs/*.md points at a file, folder or heading that exists.

The key-table convention (docs/configs.md): a key table is a Markdown table whose header's first cell is ``key``.
Each of its rows documents one config key: the first cell is the full dotted key in backticks
(`` `search.pbt.population` ``); the ``default`` cell is the default as a YAML value in backticks (`` `8` ``), or
starts with "required"; the ``allowed values`` cell names every option of a fixed set in backticks.
"""

from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel

from automl.configs import PipelineConfig

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CONFIGS_DOC = DOCS / "configs.md"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
REQUIRED_PAGES = ("configs.md", "architecture.md", "operations.md", "benchmarks.md")
README_MAX_LINES = 300

_KEY_CELL = re.compile(r"^`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`$")
_CODE_SPAN = re.compile(r"`([^`]*)`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


# --- the schema ------------------------------------------------------------------------------------------------


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also inside ``X | None``), or None for a leaf."""
    candidates = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(candidates) == 1 and isinstance(candidates[0], type) and issubclass(candidates[0], BaseModel):
        return candidates[0]
    return None


def schema_leaves(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of the schema with its pydantic field. Mappings (``search.space``, ``model.params``)
    are leaves."""
    leaves: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            leaves.update(schema_leaves(nested, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = field
    return leaves


def _literal_options(annotation: Any) -> list[Any]:
    """The options of every ``Literal`` inside ``annotation`` (``Literal[...] | None``, ``list[Literal[...]]``)."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return [option for arg in typing.get_args(annotation) for option in _literal_options(arg)]


# --- the key tables ------------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _without_code_blocks(text: str) -> list[str]:
    """The page's lines with fenced code blocks blanked (line numbers kept)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def key_table_rows(text: str) -> list[dict[str, str]]:
    """Every row of every key table in ``text``: a dict of header -> cell, plus ``line``."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for number, line in enumerate(_without_code_blocks(text), start=1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells if cells[0].lower() == "key" else []
            continue
        if not header or set("".join(cells)) <= set("-: "):
            continue
        rows.append({**dict(zip(header, cells, strict=False)), "line": str(number)})
    return rows


def documented_keys() -> dict[str, dict[str, str]]:
    rows = key_table_rows(CONFIGS_DOC.read_text())
    keys: dict[str, dict[str, str]] = {}
    for row in rows:
        match = _KEY_CELL.match(row["key"])
        assert match, f"docs/configs.md:{row['line']}: a key table's first cell must be one backticked dotted key"
        key = match.group(1)
        assert key not in keys, f"docs/configs.md:{row['line']}: {key} is documented twice"
        keys[key] = row
    return keys


def _normalised(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normalised(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _documented_value(span: str, default: Any) -> Any:
    """A backticked default as YAML; a bare word stays a string where the schema wants one (YAML 1.1 reads
    ``off`` as false)."""
    if isinstance(default, str) and not span.startswith(("'", '"')):
        return span
    return yaml.safe_load(span)


def _same(documented: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(documented, bool):
        return type(documented) is type(default) and documented == default
    if isinstance(default, float) and isinstance(documented, int | float):
        return math.isclose(documented, default, rel_tol=1e-3)
    if isinstance(default, list) and isinstance(documented, list):
        return len(default) == len(documented) and all(map(_same, documented, default))
    return documented == default


def test_the_required_docs_pages_exist() -> None:
    for page in REQUIRED_PAGES:
        assert (DOCS / page).is_file(), f"docs/{page} is missing"


def test_the_readme_stays_a_front_door() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it under {README_MAX_LINES} (move to docs/)"


def test_every_schema_key_is_documented_in_configs_md() -> None:
    missing = sorted(set(schema_leaves()) - set(documented_keys()))
    assert not missing, f"keys of PipelineConfig missing from docs/configs.md's key tables: {', '.join(missing)}"


def test_every_documented_key_exists_in_the_schema() -> None:
    stale = sorted(set(documented_keys()) - set(schema_leaves()))
    assert not stale, f"docs/configs.md documents keys PipelineConfig does not have: {', '.join(stale)}"


def test_documented_defaults_match_the_schema() -> None:
    leaves, wrong = schema_leaves(), []
    for key, row in documented_keys().items():
        field = leaves.get(key)
        if field is None:
            continue
        cell = row["default"]
        if field.is_required():
            if not cell.lower().startswith("required"):
                wrong.append(f"{key}: required in the schema, documented as {cell!r}")
            continue
        spans = _CODE_SPAN.findall(cell)
        if not spans:
            wrong.append(f"{key}: the default cell {cell!r} has no backticked value")
            continue
        default = _normalised(field.get_default(call_default_factory=True))
        documented = _documented_value(spans[0], default)
        if not _same(documented, default):
            wrong.append(f"{key}: documented default {spans[0]!r}, schema default {field.default!r}")
    assert not wrong, "docs/configs.md defaults differ from the schema:\n" + "\n".join(wrong)


def test_documented_allowed_values_name_every_option_of_the_schema() -> None:
    leaves, wrong = schema_leaves(), []
    for key, row in documented_keys().items():
        field = leaves.get(key)
        if field is None:
            continue
        named = set(_CODE_SPAN.findall(row["allowed values"]))
        missing = [str(o) for o in _literal_options(field.annotation) if str(o) not in named]
        if missing:
            wrong.append(f"{key}: allowed values do not name {', '.join(missing)}")
    assert not wrong, "docs/configs.md allowed values differ from the schema:\n" + "\n".join(wrong)


def test_the_key_table_parser_reads_the_convention() -> None:
    text = (
        "| key | type | default | allowed values | meaning |\n|---|---|---|---|---|\n"
        "| `search.pbt.population` | int | `8` | 2 to 256 | Members. |\n\n"
        "| param | default |\n|---|---|\n| `hidden_size` | 64 |\n"
    )
    rows = key_table_rows(text)
    assert [(r["key"], r["default"]) for r in rows] == [("`search.pbt.population`", "`8`")]
    assert "search.pbt.population" in schema_leaves()
    assert "search.space" in schema_leaves() and "data.split.train" in schema_leaves()


# --- links ----------------------------------------------------------------------------------------------------


def heading_slugs(text: str) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered."""
    slugs: set[str] = set()
    seen: dict[str, int] = {}
    for line in _without_code_blocks(text):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def relative_links(text: str) -> list[str]:
    """Link targets outside code, less web and mail links."""
    links = []
    for line in _without_code_blocks(text):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if not re.match(r"^(https?:|mailto:)", target):
                links.append(target)
    return links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page.read_text()):
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target}: no such file or folder")
        elif anchor and path.suffix == ".md" and anchor not in heading_slugs(path.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_links_and_skips_code() -> None:
    text = "See [a](docs/a.md#b) and [web](https://x.org).\n```\n[not](in/code.md)\n```\n`[nor](span.md)`\n"
    assert relative_links(text) == ["docs/a.md#b"]
    assert heading_slugs("## Population-based training (`search.strategy: pbt`)\n") == {
        "population-based-training-searchstrategy-pbt"
    }
