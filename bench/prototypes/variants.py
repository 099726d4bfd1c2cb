"""Scratch prototypes of footprint and latency changes, applied to an unmodified certpull (bench only).

Each variant stands for one code change proposed in docs/performance.md; the benches run the real
agent with and without it, in the same run, so the report gives measured effects, not guesses.
`apply(names)` must run before certpull.wiring is imported.

  malloc-trim       after every pass, glibc's malloc_trim(0): freed heap pages go back to the OS
  drop-loader-cache after every pass, empty botocore's loader caches (the parsed JSON models stay
                    only where a client holds them)
  full-grace        the agent as it was: every install pass waits out httpd's whole liveness grace
                    (since issue 15 the daemon ends it once fresh handshakes serve the new leaf)
  arena-max-2       MALLOC_ARENA_MAX=2 (an environment variable: the bench sets it, see ENV)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from typing import Any, Callable, Dict, List, Sequence

ENV: Dict[str, Dict[str, str]] = {"arena-max-2": {"MALLOC_ARENA_MAX": "2"}}


AFTER_PASS: List[Callable[[], None]] = []  # hooks of the applied variants, in order


def after_pass() -> None:
    """Run the after-pass hooks (AgentLoop._pass does once patched; bench_memory calls it)."""
    for hook in AFTER_PASS:
        hook()


def _after_pass(hook: Callable[[], None]) -> None:
    from certpull import daemon

    if not AFTER_PASS:
        original = daemon.AgentLoop._pass

        def _pass(self: Any, names: Sequence[str]) -> None:
            original(self, names)
            after_pass()

        daemon.AgentLoop._pass = _pass  # type: ignore[method-assign]
    AFTER_PASS.append(hook)


def malloc_trim() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _after_pass(lambda: libc.malloc_trim(0))


def drop_loader_cache() -> None:
    from botocore import loaders

    live: weakref.WeakSet[Any] = weakref.WeakSet()
    original = loaders.Loader.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        live.add(self)

    loaders.Loader.__init__ = __init__  # type: ignore[method-assign]

    def clear() -> None:
        for loader in list(live):
            loader._cache.clear()

    _after_pass(clear)


def full_grace() -> None:
    """The agent before issue 15: every install pass waits out httpd's whole liveness grace
    (no proof ends it early), so a rotation arriving meanwhile waits for it."""
    from certpull import install

    install.Installer._proof = lambda self, active: None  # type: ignore[method-assign]


VARIANTS: Dict[str, Callable[[], None]] = {
    "malloc-trim": malloc_trim,
    "drop-loader-cache": drop_loader_cache,
    "full-grace": full_grace,
    "arena-max-2": lambda: None,
}


def apply(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    for name, install in VARIANTS.items():  # in VARIANTS' order
        if name in names:
            install()


def env_for(names: Sequence[str]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for name in names:
        env.update(ENV.get(name, {}))
    return env
