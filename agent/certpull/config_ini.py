"""Stage one of the configuration: INI text -> raw sections of strings, with the line of every key.

A small reader of its own rather than configparser, because configparser silently changes what a
file means: an indented `key = value` becomes part of the previous value (a continuation line),
`[cert:www]` and `[cert: www]` are two sections, and a UTF-8 BOM hides the first header. The
grammar is configparser's as certpull used it, minus those surprises:

- a UTF-8 BOM at the start is dropped; CRLF line endings are fine;
- blank lines and whole-line comments (`;` or `#` first, indented or not) are ignored;
- `;` or `#` at the start of a line or after whitespace starts an inline comment;
- `[NAME]` opens a section; whitespace around NAME and around the `:` of `cert:NAME` is not part
  of the name, so `[cert: www]` is `[cert:www]`; anything after `]` is an error;
- `key = value` or `key: value` (the first `=` or `:` splits), keys case-insensitive, values
  stripped; an empty value is kept as "" (stage two reads it as "the default");
- a line indented deeper than the key line right above it is an error: certpull never joins
  lines, and a key there must not silently become part of another key's value;
- a section or key twice in one file is an error.

Which sections and keys exist, and what several files mean together, is stage two's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from certpull.errors import ConfigError

BOM = "\ufeff"
_KEY_SPLIT = re.compile(r"[=:]")
_NAME_COLON = re.compile(r"\s*:\s*")


@dataclass(frozen=True)
class RawSection:
    name: str
    line: int
    values: Mapping[str, str]
    lines: Mapping[str, int]
    path: str = ""
    # Where each key came from when sections of several files were merged (default: ``path``).
    paths: Mapping[str, str] = field(default_factory=dict)

    def path_of(self, key: str) -> str:
        return self.paths.get(key, self.path)


def normalise_section_name(text: str) -> str:
    """`[ cert : www ]` -> `cert:www`: whitespace is never part of a section name."""
    return _NAME_COLON.sub(":", text.strip())


def strip_comment(line: str) -> str:
    """The line without its comment: `;`/`#` at the start or after whitespace begins one."""
    for index, char in enumerate(line):
        if char in ";#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def read_sections(text: str, path: str) -> List[RawSection]:
    """Every section of an INI text, in file order; ConfigError with file:line on bad syntax."""
    if text.startswith(BOM):
        text = text[len(BOM) :]
    sections: List[RawSection] = []
    seen: Dict[str, int] = {}
    name: Optional[str] = None
    start = 0
    values: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    key_indent: Optional[int] = None  # indentation of the key line just above, if any
    last_key = ""

    def close() -> None:
        if name is not None:
            sections.append(RawSection(name, start, dict(values), dict(lines), path))

    for number, raw in enumerate(text.split("\n"), start=1):
        content = strip_comment(raw.rstrip("\r")).rstrip()
        if not content.strip():
            key_indent = None  # a blank or comment line ends any value
            continue
        indent = len(content) - len(content.lstrip())
        content = content.strip()
        if key_indent is not None and indent > key_indent:
            raise ConfigError(
                f"indented line after `{last_key}`: certpull does not join continuation lines; "
                "remove the indentation (or put the whole value on one line)",
                path,
                number,
            )
        if content.startswith("["):
            close()
            if not content.endswith("]") or "]" in content[1:-1]:
                raise ConfigError(
                    "cannot parse this section header (expected `[NAME]`)", path, number
                )
            name = normalise_section_name(content[1:-1])
            if not name:
                raise ConfigError("empty section name", path, number)
            if name in seen:
                raise ConfigError(
                    f"section [{name}] appears twice (first at line {seen[name]})", path, number
                )
            seen[name] = number
            start, values, lines, key_indent = number, {}, {}, None
            continue
        if name is None:
            raise ConfigError("text before the first [section] header", path, number)
        parts = _KEY_SPLIT.split(content, maxsplit=1)
        key = parts[0].strip().lower()
        if len(parts) != 2 or not key:
            raise ConfigError("cannot parse this line (expected `key = value`)", path, number)
        if key in values:
            raise ConfigError(
                f"key appears twice in [{name}] (first at line {lines[key]})", path, number, key
            )
        values[key] = parts[1].strip()
        lines[key] = number
        key_indent, last_key = indent, key
    close()
    return sections
