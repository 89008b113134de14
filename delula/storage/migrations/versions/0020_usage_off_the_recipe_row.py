"""claims on one recipe no longer queue on its row: usage in recipe_usage, the head moved when free

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

The claim function's version 7 ended every claim with an update of the recipe's row (its usage
count and its pool head), so the claims of one recipe waited for each other there: with eight
clients on one recipe, 73 – 78 % of the sessions running a statement were waiting for that lock
and the rate fell to 0.38 – 0.73 of the rate spread over fifty recipes (``python bench/claims.py
--hot``); with version 8, 0.0 % and 0.94 – 0.99. Version 8 (``storage/sql/instant_claim_v8.sql``)
adds usage to its server process's own row of the new table ``recipe_usage`` (one of 64 per
recipe), and moves the head only when the recipe's row is free. ``recipes.usage_count`` keeps
what was counted before (``Recipe.usage_base``); ``Recipe.usage_count`` is that plus the
recipe's rows. The downgrade folds the rows back into the column and puts version 7 back.
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    op.create_table(
        'recipe_usage',
        sa.Column('recipe_id', sa.Integer(), nullable=False),
        sa.Column('slot', sa.Integer(), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['recipe_id'], ['recipes.id'], name=op.f('fk_recipe_usage_recipe_id_recipes'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('recipe_id', 'slot', name=op.f('pk_recipe_usage')),
    )
    if op.get_bind().dialect.name == "postgresql":
        # small rows rewritten by every claim: room on their page for the new versions (HOT)
        op.execute("ALTER TABLE recipe_usage SET (fillfactor = 10, autovacuum_vacuum_scale_factor = 0, "
                   "autovacuum_vacuum_threshold = 1000)")
        op.execute((SQL / "instant_claim_v8.sql").read_text())


def downgrade() -> None:
    op.execute("""UPDATE recipes SET usage_count = usage_count + coalesce(
                      (SELECT sum(u.n) FROM recipe_usage u WHERE u.recipe_id = recipes.id), 0)""")
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v7.sql").read_text())
    op.drop_table('recipe_usage')
