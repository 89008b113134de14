"""The ground layer: every SQL statement of Delula lives in this package.

Nothing outside ``delula.storage`` imports SQLAlchemy. Modules by area:

- ``db``        engine, transactions (:class:`Store`), migrations (:func:`upgrade`)
- ``models``    the typed schema, and the job statuses and sources (:class:`JobStatus`, :class:`JobSource`)
- ``accounts``  users, API tokens, the credits ledger, app settings
- ``catalog``   recipes and their usage statistics
- ``pool``      the instant claim's statements, claim events, idempotency keys
- ``jobs``      generation rows as queue jobs
- ``stats``     counts and aggregates for backlog, API and dashboard
- ``schedule``  scheduler runs and leader
- ``audit``     the audit trail (append-only)
- ``throttle``  sign-in attempts per username and client address
- ``alerts``    the alerts' rows and transitions, the notifications outbox
"""
from .db import Conflict, DatabaseUnavailable, Store, current_revision, upgrade
from .models import (CLAIM_OUTCOMES, LEDGER_KINDS, ROLES, STAFF_ROLES, STATUSES, SYSTEM_BACKLOG_USER_ID, ApiToken,
                     ClaimEvent, CreditTransaction, Generation, JobSource, JobStatus, QueueSample, Recipe, User,
                     may_act_for)

__all__ = [
    "Store", "DatabaseUnavailable", "Conflict", "upgrade", "current_revision",
    "SYSTEM_BACKLOG_USER_ID", "ROLES", "STAFF_ROLES", "may_act_for", "STATUSES", "LEDGER_KINDS", "CLAIM_OUTCOMES", "JobStatus", "JobSource",
    "User", "ApiToken", "Recipe", "Generation", "CreditTransaction", "ClaimEvent", "QueueSample",
]
