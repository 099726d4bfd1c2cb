"""Reads the configuration from disk: the main file and its `conf.d/*.conf` drop-ins.

Drop-ins live in `conf.d/` next to the main file (`/etc/certpull/conf.d/` for the default
`/etc/certpull/certpull.conf`) and are read after it, in name order: config management writes one
file per certificate. Names starting with `.` and names not ending in `.conf` are ignored (editor
and package-manager leftovers such as `www.conf.rpmsave`). What the files mean together is
config.py's (`parse_files`).

Light on purpose (`certpull status` loads the config too): the stdlib and config.py only.
"""

from __future__ import annotations

import os
from typing import List

from certpull.config import Config, load_config
from certpull.errors import ConfigError
from certpull.fileops import read_regular_file

DROPIN_DIR = "conf.d"
DROPIN_SUFFIX = ".conf"


def read_text(path: str) -> str:
    """A config file's text; a FIFO or directory in its place is an error, not a hang."""
    return read_regular_file(path).decode("utf-8")


def dropin_dir(main_path: str) -> str:
    """`<dir of the main file>/conf.d`."""
    return os.path.join(os.path.dirname(os.path.abspath(main_path)), DROPIN_DIR)


def list_dropins(main_path: str) -> List[str]:
    """The drop-in files of ``main_path``, in the order they are read; [] without a conf.d."""
    directory = dropin_dir(main_path)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot list drop-ins: {exc.strerror or exc}", directory) from None
    return [
        os.path.join(directory, name)
        for name in sorted(names)
        if name.endswith(DROPIN_SUFFIX) and not name.startswith(".")
    ]


def load(path: str) -> Config:
    """The configuration at ``path`` and its drop-ins; ConfigError with file:line when invalid."""
    return load_config(path, read_text, list_dropins)
