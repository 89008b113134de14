"""alerts: one row per alert, and the notifications outbox

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09

- ``alerts``: one row per alert key (``below_minimum:<recipe id>``, ``hit_rate``,
  ``breaker_open``, ``no_leader``, ``failure_rate``), its state (pending, firing, resolved)
  and the times of its latest episode; every process's evaluation moves it with conditional
  statements, so a firing and a resolution happen once.
- ``alert_notifications``: the outbox of firings and resolutions for
  ``DELULA_ALERT_WEBHOOK_URL``, inserted with the transition, its attempts, when it is due next
  (or leased until), when it was sent and the last error.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('recipe_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('pending_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'firing', 'resolved')", name=op.f('ck_alerts_state')),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_alerts'))
    )
    op.create_index('ix_alerts_state_resolved_at', 'alerts', ['state', 'resolved_at'], unique=False)
    op.create_table('alert_notifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('alert_key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
              nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('firing', 'resolved')", name=op.f('ck_alert_notifications_kind')),
    sa.ForeignKeyConstraint(['alert_key'], ['alerts.key'], name=op.f('fk_alert_notifications_alert_key_alerts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_notifications'))
    )
    op.create_index('ix_alert_notifications_due', 'alert_notifications', ['next_attempt_at'], unique=False,
                    postgresql_where=sa.text('next_attempt_at IS NOT NULL'),
                    sqlite_where=sa.text('next_attempt_at IS NOT NULL'))
    op.create_index('ix_alert_notifications_alert_key_id', 'alert_notifications', ['alert_key', 'id'], unique=False)
    op.create_index('ix_alert_notifications_created_at', 'alert_notifications', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_alert_notifications_created_at', table_name='alert_notifications')
    op.drop_index('ix_alert_notifications_alert_key_id', table_name='alert_notifications')
    op.drop_index('ix_alert_notifications_due', table_name='alert_notifications',
                  postgresql_where=sa.text('next_attempt_at IS NOT NULL'),
                  sqlite_where=sa.text('next_attempt_at IS NOT NULL'))
    op.drop_table('alert_notifications')
    op.drop_index('ix_alerts_state_resolved_at', table_name='alerts')
    op.drop_table('alerts')
