"""The runtime: settings, the database, the clock, the provider and in-process caches.

Every face (web app, CLI, scheduler, tests, benchmarks) builds one :class:`Runtime` and hands it
to the domain functions, which never read the environment themselves.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from cachetools import TTLCache

from .clock import SystemClock
from .config import Settings
from .storage import Store, accounts

RECIPE_VARIABLES_CACHE = "recipe-variables"   # claims keep recipes' fields here; changing a recipe empties it


@dataclass
class Runtime:
    settings: Settings
    store: Store
    clock: object = field(default_factory=SystemClock)
    _provider: object = None
    _kept: dict = field(default_factory=dict, repr=False)   # secrets: never printed
    _caches: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock=None, provider=None, pool_size: int = 10) -> "Runtime":
        store = Store(settings.database_url, pool_size=pool_size)
        return cls(settings=settings, store=store, clock=clock or SystemClock(), _provider=provider)

    @property
    def provider(self):
        """The generation provider of ``DELULA_PROVIDER`` (built on first use); the simulator
        signs its request ids with the deployment's :attr:`simulator_key`."""
        if self._provider is None:
            key = self.simulator_key if self.settings.provider == "simulator" else None
            with self._lock:
                if self._provider is None:
                    from .provider_factory import make_provider

                    self._provider = make_provider(self.settings, clock=self.clock, simulator_key=key)
        return self._provider

    def kept_secret(self, name: str, configured: str | None) -> str:
        """``configured`` when set, else a random secret generated once and kept in the database
        under ``name``: every process of the deployment, now and after a restart, reads the same."""
        if configured:
            return configured
        if name not in self._kept:
            with self.store.begin() as s:
                self._kept[name] = accounts.put_setting_once(s, name, secrets.token_hex(32))
        return self._kept[name]

    @property
    def simulator_key(self) -> str:
        """The key of the simulator's HTTP API (``DELULA_SIMULATOR_KEY``, else kept); its ticket
        signing secret derives from it."""
        return self.kept_secret("simulator_key", self.settings.simulator_key)

    def now(self):
        return self.clock.now()

    def cache(self, name: str, *, ttl: float, maxsize: int = 256, keep: bool = False) -> TTLCache:
        """A named in-process TTL cache; :meth:`invalidate` empties it after writes. A ``keep``
        cache holds state rather than copies of the database (e.g. sign-in failures), or a copy
        allowed to be ``ttl`` old whatever is written (the metrics, which every claim would
        otherwise recompute): only naming it empties it."""
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: a background thread on this runtime stops."""
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.store.dispose()


class _LockedTTLCache(TTLCache):
    """TTLCache is not thread-safe; web workers run threads. Concurrent misses of one key share
    one computation: the first computes, the others wait for it and read its value."""

    def __init__(self, *a, keep: bool = False, **kw):
        super().__init__(*a, **kw)
        self.lock = threading.RLock()
        self.keep = keep
        self._computing: dict = {}   # key -> the lock its computation holds

    def get_or_compute(self, key, compute):
        with self.lock:
            try:
                return self[key]
            except KeyError:
                pass
            flight = self._computing.setdefault(key, threading.Lock())
        with flight:
            with self.lock:
                try:
                    return self[key]   # computed while this thread waited
                except KeyError:
                    pass
            try:
                value = compute()
                with self.lock:
                    self[key] = value
            finally:
                with self.lock:
                    self._computing.pop(key, None)
        return value

    def clear(self):
        with self.lock:
            super().clear()


def current() -> Runtime:
    """The runtime of the web app handling this request (set by ``app.create_app``)."""
    from flask import current_app

    return current_app.extensions["delula"]
