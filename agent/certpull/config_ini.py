"""Stage one of the configuration: INI text -> raw sections of strings, with the line of every key.

configparser does the parsing; this module turns its errors into `file:line` ConfigErrors and
remembers where each section and key stands, so stage two (config.py) can name the line of a bad
value. Which sections and keys exist is stage two's business.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

from certpull.errors import ConfigError


@dataclass(frozen=True)
class RawSection:
    name: str
    line: int
    values: Mapping[str, str]
    lines: Mapping[str, int]


def read_sections(text: str, path: str) -> List[RawSection]:
    """Every section of an INI text, in file order; ConfigError with file:line on bad syntax."""
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        empty_lines_in_values=False,
        default_section="\x00no-defaults",  # a [DEFAULT] section is just unknown here
    )
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"section [{exc.section}] appears twice", path, exc.lineno) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"key appears twice in [{exc.section}]", path, exc.lineno, exc.option
        ) from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError("text before the first [section] header", path, exc.lineno) from None
    except configparser.ParsingError as exc:
        line = exc.errors[0][0] if exc.errors else None
        raise ConfigError("cannot parse this line (expected `key = value`)", path, line) from None
    except configparser.Error as exc:
        raise ConfigError(str(exc).splitlines()[0], path) from None

    section_lines, key_lines = _line_numbers(text)
    sections = []
    for name in parser.sections():
        values = {key: value.strip() for key, value in parser.items(name)}
        lines = {key: key_lines.get((name, key), section_lines.get(name, 0)) for key in values}
        sections.append(RawSection(name, section_lines.get(name, 0), values, lines))
    return sections


def _line_numbers(text: str) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int]]:
    """Where each section header and key stands (configparser does not keep line numbers)."""
    section_lines: Dict[str, int] = {}
    key_lines: Dict[Tuple[str, str], int] = {}
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[:1].isspace():
            continue
        if stripped.startswith("[") and "]" in stripped:
            current = stripped[1 : stripped.index("]")].strip()
            section_lines.setdefault(current, number)
            continue
        key = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
        key_lines.setdefault((current, key), number)
    return section_lines, key_lines
