"""trust: test accounts, sessions that can end, the acting user on every record, an audit trail

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

- ``users``: ``is_test`` (product staff act only for test accounts), ``is_active`` (a deactivated
  account signs in and authenticates no more), ``session_epoch`` (every session signed with an
  older epoch has ended); ``credits`` is a bigint, and only the system role goes below zero.
- ``credit_transactions`` and ``claim_events`` carry ``actor_id``: who asked, when staff acted for
  a user. Ledger amounts are bigints like the balance.
- ``claim_events.outcome`` may be ``forbidden`` (an authenticated attempt the caller may not make).
- ``idempotency_keys.request_hash``: a key repeated with another request is refused.
- ``audit_events``: who did what to whom, append-only, written in the action's own transaction.
- The claim function's version 5 (``storage/sql/instant_claim_v5.sql``) takes the actor and the
  request id; its signature changes, so version 4 is dropped first (and put back on downgrade).
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"
V4 = "delula_instant_claim(integer, varchar, jsonb, timestamptz, double precision)"
V5 = "delula_instant_claim(integer, varchar, varchar, jsonb, timestamptz, double precision, varchar)"
OUTCOMES = "outcome IN ('claimed', 'no_backlog', 'race', 'insufficient_credits', 'rate_limited', 'invalid'{})"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(f"DROP FUNCTION {V4}")
    with op.batch_alter_table('users') as batch:
        batch.alter_column('credits', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
        batch.add_column(sa.Column('is_test', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch.add_column(sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False))
        batch.add_column(sa.Column('session_epoch', sa.Integer(), server_default='0', nullable=False))
        batch.create_check_constraint(op.f('ck_users_credits'), "credits >= 0 OR role = 'system'")
    with op.batch_alter_table('credit_transactions') as batch:
        batch.alter_column('amount', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
        batch.alter_column('balance_after', existing_type=sa.Integer(), type_=sa.BigInteger(),
                           existing_nullable=False)
        batch.add_column(sa.Column('actor_id', sa.String(length=64), nullable=True))
    with op.batch_alter_table('claim_events') as batch:
        batch.add_column(sa.Column('actor_id', sa.String(length=64), nullable=True))
        batch.drop_constraint(op.f('ck_claim_events_outcome'), type_='check')
        batch.create_check_constraint(op.f('ck_claim_events_outcome'), OUTCOMES.format(", 'forbidden'"))
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('target_user_id', sa.String(length=64), nullable=True),
    sa.Column('target_job_id', sa.BigInteger(), nullable=True),
    sa.Column('target_recipe_id', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    op.create_index('ix_audit_events_at', 'audit_events', ['at'], unique=False)
    op.create_index('ix_audit_events_actor_id_at', 'audit_events', ['actor_id', 'at'], unique=False)
    op.create_index('ix_audit_events_action_at', 'audit_events', ['action', 'at'], unique=False)
    if postgres:
        op.execute((SQL / "instant_claim_v5.sql").read_text())


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(f"DROP FUNCTION {V5}")
    op.drop_table('audit_events')
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.drop_column('request_hash')
    op.execute("DELETE FROM claim_events WHERE outcome = 'forbidden'")
    with op.batch_alter_table('claim_events') as batch:
        batch.drop_constraint(op.f('ck_claim_events_outcome'), type_='check')
        batch.create_check_constraint(op.f('ck_claim_events_outcome'), OUTCOMES.format(""))
        batch.drop_column('actor_id')
    with op.batch_alter_table('credit_transactions') as batch:
        batch.drop_column('actor_id')
        batch.alter_column('balance_after', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
        batch.alter_column('amount', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('users') as batch:
        batch.drop_constraint(op.f('ck_users_credits'), type_='check')
        batch.drop_column('session_epoch')
        batch.drop_column('is_active')
        batch.drop_column('is_test')
        batch.alter_column('credits', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
    if postgres:
        op.execute((SQL / "instant_claim_v4.sql").read_text())
