"""stat_counts: completions by log-scaled duration bucket, and an index for one recipe's rows

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

Completions were counted per whole second of processing, per recipe and hour: a week of jobs
taking 15 s to 7 min held 1.72 M rows, and the all-recipes view, keyed by ``at`` first, read
the whole table. They are now counted per duration bucket (``dashboard.DURATION_EDGES``: whole
seconds below 16 s, then a 2^(1/8) grid of whole seconds, at most 117 buckets) keyed by the
bucket's lower edge, and ``ix_stat_counts_recipe_metric_at`` serves the overview's reads of one
recipe's (or the sums') rows.

Upgrade merges every whole-second key into its bucket (exact: the edges are whole seconds).
Downgrade drops the index and leaves the merged keys: each is a whole second (its bucket's lower
edge), which the code before this revision reads as that second, so percentiles from rows merged
here read up to 12 % low afterwards.
"""
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

HISTOGRAM = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 480)
GRID = [round(16 * 2 ** (j / 8)) for j in range(100) if 16 * 2 ** (j / 8) <= 86_400]
EDGES = sorted(set(range(16)) | {x for x in GRID if not any(e and x != e and abs(x - e) / e < 0.04 for e in HISTOGRAM)}
               | set(HISTOGRAM))
MERGING = "completed~"     # the merged rows, until the whole-second ones are gone


def upgrade() -> None:
    whens = " ".join(f"WHEN CAST(key AS INTEGER) >= {e} THEN '{e}'" for e in reversed(EDGES))
    bucket = f"CASE WHEN key = '-' THEN '-' ELSE (CASE {whens} ELSE '-' END) END"
    op.execute(f"""INSERT INTO stat_counts (at, recipe_id, metric, key, n)
                   SELECT at, recipe_id, '{MERGING}', {bucket}, sum(n) FROM stat_counts
                   WHERE metric = 'completed' GROUP BY at, recipe_id, {bucket}""")
    op.execute("DELETE FROM stat_counts WHERE metric = 'completed'")
    op.execute(f"UPDATE stat_counts SET metric = 'completed' WHERE metric = '{MERGING}'")
    op.create_index('ix_stat_counts_recipe_metric_at', 'stat_counts', ['recipe_id', 'metric', 'at'],
                    postgresql_include=['key', 'n'])


def downgrade() -> None:
    op.drop_index('ix_stat_counts_recipe_metric_at', table_name='stat_counts')
