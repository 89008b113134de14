"""Helpers shared by the test modules; the fixtures stay in ``tests/conftest.py``, which uses them.

- :mod:`.db`: databases — test settings, admin statements, throwaway PostgreSQL clusters, what a
  refused request must leave unchanged, waiting for a lock wait;
- :mod:`.factories`: data — claimable pool items, the API's world of users and recipes, an hour
  of realistic dashboard activity;
- :mod:`.api`: the JSON API — a bare app, bearer headers, a real HTTP server, claiming clients;
- :mod:`.dash`: the whole app through Flask's test client — its world, signing in, callback requests;
- :mod:`.browser`: headless Chromium driving a live app;
- :mod:`.processes`: real processes — a worker's environment, spawning and stopping them;
- :mod:`.waiting`: :func:`~.waiting.wait_for`.

Test modules import what they share from here, never from each other or from ``conftest``.
"""
