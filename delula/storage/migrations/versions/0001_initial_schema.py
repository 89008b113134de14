"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_app_settings'))
    )
    op.create_table('claim_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('recipe_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('generation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('claimed', 'no_backlog', 'race', 'insufficient_credits', 'rate_limited', 'invalid')", name=op.f('ck_claim_events_outcome')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_claim_events'))
    )
    op.create_index('ix_claim_events_created_at', 'claim_events', ['created_at'], unique=False)
    op.create_index('ix_claim_events_recipe_id_created_at', 'claim_events', ['recipe_id', 'created_at'], unique=False)
    op.create_table('queue_samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pending', sa.Integer(), nullable=False),
    sa.Column('processing', sa.Integer(), nullable=False),
    sa.Column('backlog', sa.Integer(), nullable=False),
    sa.Column('backlog_in_flight', sa.Integer(), nullable=False),
    sa.Column('recipes_below_minimum', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_queue_samples'))
    )
    op.create_index(op.f('ix_queue_samples_created_at'), 'queue_samples', ['created_at'], unique=False)
    op.create_table('recipes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('slug', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('credit_cost', sa.Integer(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('model_id', sa.String(length=200), nullable=False),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('min_backlog', sa.Integer(), nullable=True),
    sa.Column('usage_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('credit_cost >= 0', name=op.f('ck_recipes_credit_cost')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recipes')),
    sa.UniqueConstraint('slug', name=op.f('uq_recipes_slug'))
    )
    op.create_table('scheduler_leader',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_leader'))
    )
    op.create_table('scheduler_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduler_runs'))
    )
    op.create_index('ix_scheduler_runs_job_started_at', 'scheduler_runs', ['job', 'started_at'], unique=False)
    op.create_table('users',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('credits', sa.Integer(), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('instant_cooldown_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('user', 'product', 'ops', 'system')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)
    op.create_table('credit_transactions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('balance_after', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('generation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('instant_claim', 'generation', 'refund', 'grant')", name=op.f('ck_credit_transactions_kind')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_credit_transactions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_transactions'))
    )
    op.create_index('ix_credit_transactions_generation_id', 'credit_transactions', ['generation_id'], unique=False)
    op.create_index('ix_credit_transactions_user_id_id', 'credit_transactions', ['user_id', 'id'], unique=False)
    op.create_index('uq_credit_transactions_refund', 'credit_transactions', ['generation_id'], unique=True, postgresql_where=sa.text("kind = 'refund'"), sqlite_where=sa.text("kind = 'refund'"))
    op.create_table('generations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('recipe_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('form_data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('provider_request_id', sa.String(length=512), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('poll_count', sa.Integer(), nullable=False),
    sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('asset_url', sa.Text(), nullable=True),
    sa.Column('thumbnail_url', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('credits_charged', sa.Integer(), nullable=False),
    sa.Column('refunded', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')", name=op.f('ck_generations_status')),
    sa.ForeignKeyConstraint(['recipe_id'], ['recipes.id'], name=op.f('fk_generations_recipe_id_recipes')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_generations_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_generations'))
    )
    op.create_index('ix_generations_completed_at', 'generations', ['completed_at'], unique=False)
    op.create_index('ix_generations_created_at', 'generations', ['created_at'], unique=False)
    op.create_index('ix_generations_pending', 'generations', ['priority', 'created_at', 'id'], unique=False, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    op.create_index('ix_generations_pool', 'generations', ['recipe_id', 'created_at', 'id'], unique=False, postgresql_where=sa.text("user_id = 'system_backlog' AND status = 'completed'"), sqlite_where=sa.text("user_id = 'system_backlog' AND status = 'completed'"))
    op.create_index('ix_generations_processing', 'generations', ['next_poll_at'], unique=False, postgresql_where=sa.text("status = 'processing'"), sqlite_where=sa.text("status = 'processing'"))
    op.create_index('ix_generations_recipe_id_status', 'generations', ['recipe_id', 'status'], unique=False)
    op.create_index('ix_generations_status_updated_at', 'generations', ['status', 'updated_at'], unique=False)
    op.create_index('ix_generations_user_id_created_at', 'generations', ['user_id', 'created_at'], unique=False)
    op.create_table('idempotency_keys',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idempotency_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_index(op.f('ix_idempotency_keys_created_at'), 'idempotency_keys', ['created_at'], unique=False)
    op.create_table('recipe_usage_options',
    sa.Column('recipe_id', sa.Integer(), nullable=False),
    sa.Column('variable_id', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=500), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['recipe_id'], ['recipes.id'], name=op.f('fk_recipe_usage_options_recipe_id_recipes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('recipe_id', 'variable_id', 'value', name=op.f('pk_recipe_usage_options'))
    )


def downgrade() -> None:
    op.drop_table('recipe_usage_options')
    op.drop_index(op.f('ix_idempotency_keys_created_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index('ix_generations_user_id_created_at', table_name='generations')
    op.drop_index('ix_generations_status_updated_at', table_name='generations')
    op.drop_index('ix_generations_recipe_id_status', table_name='generations')
    op.drop_index('ix_generations_processing', table_name='generations', postgresql_where=sa.text("status = 'processing'"), sqlite_where=sa.text("status = 'processing'"))
    op.drop_index('ix_generations_pool', table_name='generations', postgresql_where=sa.text("user_id = 'system_backlog' AND status = 'completed'"), sqlite_where=sa.text("user_id = 'system_backlog' AND status = 'completed'"))
    op.drop_index('ix_generations_pending', table_name='generations', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    op.drop_index('ix_generations_created_at', table_name='generations')
    op.drop_index('ix_generations_completed_at', table_name='generations')
    op.drop_table('generations')
    op.drop_index('uq_credit_transactions_refund', table_name='credit_transactions', postgresql_where=sa.text("kind = 'refund'"), sqlite_where=sa.text("kind = 'refund'"))
    op.drop_index('ix_credit_transactions_user_id_id', table_name='credit_transactions')
    op.drop_index('ix_credit_transactions_generation_id', table_name='credit_transactions')
    op.drop_table('credit_transactions')
    op.drop_index(op.f('ix_api_tokens_user_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_index('ix_scheduler_runs_job_started_at', table_name='scheduler_runs')
    op.drop_table('scheduler_runs')
    op.drop_table('scheduler_leader')
    op.drop_table('recipes')
    op.drop_index(op.f('ix_queue_samples_created_at'), table_name='queue_samples')
    op.drop_table('queue_samples')
    op.drop_index('ix_claim_events_recipe_id_created_at', table_name='claim_events')
    op.drop_index('ix_claim_events_created_at', table_name='claim_events')
    op.drop_table('claim_events')
    op.drop_table('app_settings')
