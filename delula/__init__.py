"""Delula backlog: a pool of pre-generated videos per recipe, claimed instantly.

Faces (``pages/``, :mod:`delula.api`, :mod:`delula.cli`, :mod:`delula.scheduler`) call the domain
(:mod:`delula.claims`, :mod:`delula.generations`, :mod:`delula.backlog`, :mod:`delula.queue`,
:mod:`delula.auth`), which stands on :mod:`delula.storage` (all SQL) and
:mod:`delula.providers` (fal | simulator).
"""
__version__ = "0.1.0"
