"""Scratch prototypes of footprint and latency changes, applied to an unmodified certpull (bench only).

Each variant stands for one code change proposed in docs/performance.md; the benches run the real
agent with and without it, in the same run, so the report gives measured effects, not guesses.
`apply(names)` must run before certpull.daemon is imported (botocore-only replaces certpull.aws).

  malloc-trim       after every pass, glibc's malloc_trim(0): freed heap pages go back to the OS
  shared-session    one botocore session per process: the event queue's SQS client and the agent's
                    clients share one loader and endpoint resolver (run_agent builds a second today)
  botocore-only     certpull.aws on botocore.session alone: boto3 and s3transfer never imported
  drop-loader-cache after every pass, empty botocore's loader caches (the parsed JSON models stay
                    only where a client holds them)
  fast-grace        graceful_reload ends its liveness grace as soon as every verify target serves
                    the new leaf from a live main process (the full grace still applies without one)
  arena-max-2       MALLOC_ARENA_MAX=2 (an environment variable: the bench sets it, see ENV)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import weakref
from typing import Any, Callable, Dict, List, Sequence

ENV: Dict[str, Dict[str, str]] = {"arena-max-2": {"MALLOC_ARENA_MAX": "2"}}


AFTER_PASS: List[Callable[[], None]] = []  # hooks of the applied variants, in order


def after_pass() -> None:
    """Run the after-pass hooks (AgentLoop._pass does once patched; bench_memory calls it)."""
    for hook in AFTER_PASS:
        hook()


def _after_pass(hook: Callable[[], None]) -> None:
    from certpull import loop

    if not AFTER_PASS:
        original = loop.AgentLoop._pass

        def _pass(self: Any, names: Sequence[str]) -> None:
            original(self, names)
            after_pass()

        loop.AgentLoop._pass = _pass  # type: ignore[method-assign]
    AFTER_PASS.append(hook)


def malloc_trim() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _after_pass(lambda: libc.malloc_trim(0))


def shared_session() -> None:
    from certpull import aws

    original = aws.AwsClients.__init__
    shared: List[Any] = []

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("session") is None:
            if not shared:
                original(self, *args, **kwargs)
                shared.append(self._session)
                return
            kwargs["session"] = shared[0]
        original(self, *args, **kwargs)

    aws.AwsClients.__init__ = __init__  # type: ignore[method-assign]


def botocore_only() -> None:
    if "certpull.daemon" in sys.modules:
        raise RuntimeError("botocore-only must be applied before certpull.daemon is imported")
    import certpull
    from prototypes import aws_botocore

    sys.modules["certpull.aws"] = aws_botocore
    certpull.aws = aws_botocore  # type: ignore[attr-defined]


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


def fast_grace() -> None:
    """Prototype of Httpd.graceful_reload(proven=...) and its use in Agent._reload_and_verify."""
    from certpull import daemon, httpd
    from certpull.errors import ReloadError
    from certpull.pem import first_cert_der

    def graceful_reload(self: Any, proven: Callable[[], bool] = lambda: False) -> None:
        was_alive = self.is_running()
        self._runner.run(self.reload_argv)
        if self.pid_file is None:
            return
        started = self._clock()
        seen_alive = was_alive
        while True:
            alive = self.is_running()
            if seen_alive and not alive:
                raise ReloadError("httpd stopped after the graceful reload; see its error log")
            seen_alive = seen_alive or alive
            # A new leaf on a fresh handshake comes from a child the new generation forked: the
            # main process got past reading the new files (where a bad key kills it, AH02565).
            if alive and proven():
                return
            if self._clock() - started >= self.alive_grace_s:
                break
            self._sleep(httpd._POLL_INTERVAL_S)
        if not seen_alive:
            raise ReloadError("httpd is not running after the graceful reload")

    httpd.Httpd.graceful_reload = graceful_reload  # type: ignore[method-assign]

    original = daemon.Agent._reload_and_verify

    def _reload_and_verify(self: Any, active: List[Any]) -> None:
        targets = []
        for cand in active:
            if cand.cert.verify is None:
                return original(self, active)  # no proof for this one: the full grace
            host, port = cand.cert.verify
            target = httpd.VerifyTarget(host=host, port=port, server_name=cand.cert.server_name)
            targets.append((target, first_cert_der(cand.bundle.cert_pem)))

        def proven() -> bool:
            for target, der in targets:
                try:
                    if httpd.fetch_served_leaf(target, 1.0) != der:
                        return False
                except (ReloadError, OSError):
                    return False
            return True

        reload = self.httpd.graceful_reload
        self.httpd.graceful_reload = lambda: reload(proven)
        try:
            return original(self, active)
        finally:
            del self.httpd.graceful_reload

    daemon.Agent._reload_and_verify = _reload_and_verify  # type: ignore[method-assign]


VARIANTS: Dict[str, Callable[[], None]] = {
    "botocore-only": botocore_only,  # first: it replaces certpull.aws before anything imports it
    "shared-session": shared_session,
    "malloc-trim": malloc_trim,
    "drop-loader-cache": drop_loader_cache,
    "fast-grace": fast_grace,
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
