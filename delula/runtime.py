"""The runtime: settings, the database, the clock, the provider and in-process caches.

Every face (web app, CLI, scheduler, tests, benchmarks) builds one :class:`Runtime` and hands it
to the domain functions, which never read the environment themselves.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cachetools import TTLCache

from .clock import SystemClock
from .config import Settings
from .storage import Store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    clock: object = field(default_factory=SystemClock)
    _provider: object = None
    _caches: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock=None, provider=None, pool_size: int = 10) -> "Runtime":
        store = Store(settings.database_url, pool_size=pool_size)
        return cls(settings=settings, store=store, clock=clock or SystemClock(), _provider=provider)

    @property
    def provider(self):
        """The generation provider of ``DELULA_PROVIDER`` (built on first use)."""
        if self._provider is None:
            with self._lock:
                if self._provider is None:
                    from .provider_factory import make_provider

                    self._provider = make_provider(self.settings, clock=self.clock)
        return self._provider

    def now(self):
        return self.clock.now()

    def cache(self, name: str, *, ttl: float, maxsize: int = 256, keep: bool = False) -> TTLCache:
        """A named in-process TTL cache; :meth:`invalidate` empties it after writes. A ``keep``
        cache holds state rather than copies of the database (e.g. sign-in failures): only
        naming it empties it."""
        with self._lock:
            c = self._caches.get(name)
            if c is None:
                c = self._caches[name] = _LockedTTLCache(maxsize=maxsize, ttl=ttl, keep=keep)
            return c

    def invalidate(self, *names: str) -> None:
        """Empty the named caches (all but the ``keep`` ones when none named)."""
        with self._lock:
            targets = ([self._caches[n] for n in names if n in self._caches] if names
                       else [c for c in self._caches.values() if not c.keep])
        for c in targets:
            c.clear()

    def close(self) -> None:
        self.store.dispose()


class _LockedTTLCache(TTLCache):
    """TTLCache is not thread-safe; web workers run threads."""

    def __init__(self, *a, keep: bool = False, **kw):
        super().__init__(*a, **kw)
        self.lock = threading.RLock()
        self.keep = keep

    def get_or_compute(self, key, compute):
        with self.lock:
            try:
                return self[key]
            except KeyError:
                pass
        value = compute()
        with self.lock:
            self[key] = value
        return value

    def clear(self):
        with self.lock:
            super().clear()


def current() -> Runtime:
    """The runtime of the web app handling this request (set by ``app.create_app``)."""
    from flask import current_app

    return current_app.extensions["delula"]
