"""Notice when someone else changes the live files, links or the config file (watchdog/inotify).

The watcher only says *which key changed* ("www", or "config"); the orchestrator then compares
the live files with what it installed and restores them (drift repair) or reloads the config.
So a spurious report costs one comparison, while a missed one leaves drift until the next
regular check: the watcher errs towards reporting.

How it works:

1. Each key maps to paths. A path that is a real directory (a cert's live dir) is watched
   recursively, so an edit through ``cert.pem -> ..data/cert.pem`` into the versioned
   directory is seen. Any other path (the config file, a compat link, a live dir not created
   yet) is watched through its parent directory, non-recursively, matching its own name: this
   catches editors that write a temporary file and rename it over the original.
2. Events that change nothing (opened, closed without writing) are ignored.
3. A change is reported after ``debounce_s`` of quiet for that key (at most ``max_delay_s``
   after the first event, so a steady stream cannot postpone it forever), once per burst.
4. ``suppress(key)`` hides the agent's own installs: events for the key are dropped while the
   block runs and for ``settle_s`` after it (inotify delivers asynchronously, so the last
   events of an install can arrive just after it returns).
5. Callbacks run on the watcher's own thread; an exception in one is logged, not fatal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

CONFIG_KEY = "config"
_CHANGES = frozenset({"created", "deleted", "modified", "moved", "closed"})

PathSpec = Union[str, Sequence[str]]


class _Target:
    """One watched path for one key: a directory tree, or a single name in a directory."""

    def __init__(self, key: str, path: str) -> None:
        self.key = key
        self.path = os.path.abspath(path)
        self.is_tree = os.path.isdir(self.path) and not os.path.islink(self.path)
        self.watch_dir = self.path if self.is_tree else os.path.dirname(self.path)

    def matches(self, event_path: str) -> bool:
        return event_path == self.path or event_path.startswith(self.path + os.sep)


class _Handler(FileSystemEventHandler):
    def __init__(self, on_path: Callable[[str], None]) -> None:
        self._on_path = on_path

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:  # (2)
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._on_path(os.fsdecode(path))


class DriftWatcher:
    """Reports keys whose watched files changed, debounced, outside ``suppress`` blocks."""

    def __init__(
        self,
        paths_to_watch: Mapping[str, PathSpec],
        on_change: Callable[[str], None],
        debounce_s: float = 0.5,
        max_delay_s: Optional[float] = None,
        settle_s: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        observer_factory: Callable[[], Any] = Observer,
    ) -> None:
        self._on_change = on_change
        self._debounce_s = debounce_s
        self._max_delay_s = max_delay_s if max_delay_s is not None else max(5 * debounce_s, 2.0)
        self._settle_s = settle_s if settle_s is not None else max(debounce_s, 0.25)
        self._clock = clock
        self._observer_factory = observer_factory
        self._cond = threading.Condition()
        self._targets: List[_Target] = []
        self._pending: Dict[str, Tuple[float, float]] = {}  # key -> (first event, last event)
        self._suppressed: Dict[str, int] = {}
        self._settle_until: Dict[str, float] = {}
        self._watches: Dict[Tuple[str, bool], Any] = {}
        self._observer: Optional[Any] = None
        self._worker: Optional[threading.Thread] = None
        self._stopping = False
        self._handler = _Handler(self._on_path)
        self._specs: Dict[str, List[str]] = _normalise(paths_to_watch)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._observer is not None:
            return
        self._stopping = False
        self._observer = self._observer_factory()
        self._observer.daemon = True
        self._reconcile()
        self._observer.start()
        self._worker = threading.Thread(target=self._run, name="certpull-drift", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
            self._watches.clear()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None

    def update(self, paths_to_watch: Optional[Mapping[str, PathSpec]] = None) -> None:
        """Watch a new set of paths (SIGHUP), or re-check the same set after the agent created
        directories that did not exist yet (first install)."""
        with self._cond:
            if paths_to_watch is not None:
                self._specs = _normalise(paths_to_watch)
                for key in list(self._pending):
                    if key not in self._specs:
                        del self._pending[key]
        if self._observer is not None:
            self._reconcile()

    @property
    def watched_dirs(self) -> List[Tuple[str, bool]]:
        """(directory, recursive) pairs currently watched; for status and tests."""
        return sorted(self._watches)

    @contextlib.contextmanager
    def suppress(self, key: str) -> Iterator[None]:
        """Hide changes to ``key`` made inside the block (the agent's own install). (4)"""
        with self._cond:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._suppressed[key] -= 1
                if not self._suppressed[key]:
                    del self._suppressed[key]
                self._settle_until[key] = self._clock() + self._settle_s

    # -- internals ---------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """(1) Turn key -> paths into watched directories; schedule new ones, drop stale ones."""
        observer = self._observer
        if observer is None:
            return
        targets = [_Target(key, path) for key, paths in self._specs.items() for path in paths]
        wanted: Set[Tuple[str, bool]] = set()
        for target in targets:
            if os.path.isdir(target.watch_dir):
                wanted.add((target.watch_dir, target.is_tree))
            else:
                log.debug(
                    "drift: %s does not exist yet; not watching %s", target.watch_dir, target.path
                )
        trees = {d for d, recursive in wanted if recursive}
        wanted = {
            (d, r)
            for d, r in wanted
            if r or not any(d == t or d.startswith(t + os.sep) for t in trees)
        }
        with self._cond:
            self._targets = targets
        for watch_key in set(self._watches) - wanted:
            observer.unschedule(self._watches.pop(watch_key))
        for directory, recursive in sorted(wanted - set(self._watches)):
            try:
                self._watches[(directory, recursive)] = observer.schedule(
                    self._handler, directory, recursive=recursive
                )
            except OSError as exc:
                log.warning("drift: cannot watch %s: %s", directory, exc)

    def _on_path(self, path: str) -> None:
        now = self._clock()
        with self._cond:
            keys = {t.key for t in self._targets if t.matches(path)}
            for key in keys:
                if key in self._suppressed or now < self._settle_until.get(key, 0.0):
                    continue
                first, _ = self._pending.get(key, (now, now))
                self._pending[key] = (first, now)
                self._cond.notify_all()

    def _run(self) -> None:
        """(3) Fire each key once its burst has been quiet for ``debounce_s``."""
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self._clock()
                fire = [key for key, times in self._pending.items() if self._fire_at(times) <= now]
                for key in fire:
                    del self._pending[key]
                if not fire:
                    wake = min((self._fire_at(t) for t in self._pending.values()), default=None)
                    self._cond.wait(None if wake is None else max(0.0, wake - now))
                    continue
            for key in sorted(fire):  # (5) outside the lock: the callback may call suppress()
                try:
                    self._on_change(key)
                except Exception:
                    log.exception("drift: handling a change of %s failed", key)

    def _fire_at(self, times: Tuple[float, float]) -> float:
        first, last = times
        return min(last + self._debounce_s, first + self._max_delay_s)


def _normalise(paths_to_watch: Mapping[str, PathSpec]) -> Dict[str, List[str]]:
    result: Dict[str, List[str]] = {}
    for key, spec in paths_to_watch.items():
        result[key] = [spec] if isinstance(spec, str) else [str(p) for p in spec]
    return result
