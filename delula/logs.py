"""Logging for the processes Delula starts: the web app, the worker and the CLI.

INFO to stderr with time, level and logger; Alembic only when something goes wrong (it is run on
every start and would otherwise narrate its plugin set-up each time).
"""
from __future__ import annotations

import logging


def configure() -> None:
    """Send INFO and above to stderr (unless the root logger is set up already) and quiet Alembic."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
