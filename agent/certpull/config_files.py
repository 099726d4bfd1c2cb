"""Reads the configuration from disk: the one place that opens the config file.

Light on purpose (`certpull status` loads the config too): the stdlib and config.py only.
"""

from __future__ import annotations

from certpull.config import Config, load_config


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def load(path: str) -> Config:
    """The configuration at ``path``; ConfigError with file:line when it is invalid or unreadable."""
    return load_config(path, read_text)
