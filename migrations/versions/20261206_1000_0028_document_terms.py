"""document_terms and documents.indexed_chunks/indexed_tokens: BM25's collection statistics kept by triggers

The lexical arm of retrieval (``app.rag.retrieval.lexical_ranking``) scores chunks by BM25, which needs the
number of the coach's searchable chunks, their mean length and each query word's document frequency. Until
now one query computed them from the chunks themselves: every query read all of the coach's chunks (1.6 s at
the median for a coach of 150,000 chunks). Now:

- ``document_terms``: per document, each lexeme of its chunks' ``tsv`` with the number of its chunks holding
  it (``df``); a word's frequency over the coach's searchable documents is a sum over at most one row per
  document (index on ``coach_id, term``).
- ``documents.indexed_chunks`` and ``indexed_tokens``: the document's chunks and the sum of their
  ``token_count``.

Statement-level triggers on ``chunks`` (with transition tables) keep both exact for every write: inserts,
deletes (a re-run, a cascade from a deleted document or coach) and updates of the searched text (a new vector
alone costs a join of the update's rows). They run as
the writer, so row-level security applies to ``document_terms`` as to every tenant table. Existing chunks are
counted once here.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TERMS = """SELECT c.coach_id, c.document_id, t.term, count(*) AS df
      FROM {rows} c CROSS JOIN LATERAL unnest(tsvector_to_array(c.tsv)) AS t(term)
      GROUP BY c.coach_id, c.document_id, t.term"""
_COUNTS = """UPDATE documents d SET indexed_chunks = d.indexed_chunks {sign} s.chunks,
                             indexed_tokens = d.indexed_tokens {sign} s.tokens
      FROM (SELECT document_id, count(*) AS chunks, sum(token_count) AS tokens FROM {rows} c GROUP BY document_id) s
      WHERE d.id = s.document_id;"""
_ADD = (
    "INSERT INTO document_terms AS dt (coach_id, document_id, term, df) "
    + _TERMS
    + " ORDER BY 2, 3 ON CONFLICT (document_id, term) DO UPDATE SET df = dt.df + EXCLUDED.df; "
    + _COUNTS.replace("{sign}", "+")
)
"""Count the chunks of ``rows`` (a transition table, or a subquery of one) in."""
_REMOVE = (
    "UPDATE document_terms dt SET df = dt.df - s.df FROM ("
    + _TERMS
    + ") s WHERE dt.document_id = s.document_id AND dt.term = s.term; "
    "DELETE FROM document_terms dt WHERE dt.df <= 0 AND dt.document_id IN (SELECT document_id FROM {rows} c); "
    + _COUNTS.replace("{sign}", "-")
)
"""Count the chunks of ``rows`` out. Only rows that exist are changed: in a cascade from a deleted document, its
terms may be gone already (an insert would then break their foreign key)."""

_CHANGED = (
    "(SELECT {side}.* FROM old_rows o JOIN new_rows n ON n.id = o.id"
    " WHERE (o.tsv, o.token_count, o.document_id, o.coach_id) IS DISTINCT FROM"
    " (n.tsv, n.token_count, n.document_id, n.coach_id))"
)
"""The chunks of an update whose searched text, length or owner changed (``side``: ``o`` before, ``n`` after);
a new vector alone (re-embedding) changes nothing here."""


def _function(name: str, body: str) -> str:
    return f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"


def upgrade() -> None:
    op.create_table(
        "document_terms",
        sa.Column("coach_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("document_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("df", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["coach_id"], ["coaches.id"], name=op.f("fk_document_terms_coach_id_coaches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_document_terms_document_id_documents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("document_id", "term", name=op.f("pk_document_terms")),
    )
    op.create_index("ix_document_terms_coach_id_term", "document_terms", ["coach_id", "term"])
    op.add_column("documents", sa.Column("indexed_chunks", sa.Integer(), server_default="0", nullable=False))
    op.add_column("documents", sa.Column("indexed_tokens", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("ALTER TABLE document_terms ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE document_terms FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY tenant_isolation ON document_terms "
        "USING (coach_id = app_current_coach_id()) WITH CHECK (coach_id = app_current_coach_id())"
    )
    op.execute(_function("chunks_added", _ADD.format(rows="new_rows")))
    op.execute(_function("chunks_removed", _REMOVE.format(rows="old_rows")))
    changed_old, changed_new = _CHANGED.format(side="o"), _CHANGED.format(side="n")
    op.execute(_function("chunks_changed", _REMOVE.format(rows=changed_old) + " " + _ADD.format(rows=changed_new)))
    op.execute(
        "CREATE TRIGGER chunks_added AFTER INSERT ON chunks REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION chunks_added()"
    )
    op.execute(
        "CREATE TRIGGER chunks_removed AFTER DELETE ON chunks REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION chunks_removed()"
    )
    op.execute(
        "CREATE TRIGGER chunks_changed AFTER UPDATE ON chunks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION chunks_changed()"
    )
    op.execute(
        """
        INSERT INTO document_terms (coach_id, document_id, term, df)
        SELECT c.coach_id, c.document_id, t.term, count(*)
        FROM chunks c CROSS JOIN LATERAL unnest(tsvector_to_array(c.tsv)) AS t(term)
        GROUP BY c.coach_id, c.document_id, t.term
        """
    )
    op.execute(
        """
        UPDATE documents d SET indexed_chunks = s.chunks, indexed_tokens = s.tokens
        FROM (SELECT document_id, count(*) AS chunks, sum(token_count) AS tokens FROM chunks GROUP BY document_id) s
        WHERE d.id = s.document_id
        """
    )


def downgrade() -> None:
    for name in ("chunks_added", "chunks_removed", "chunks_changed"):
        op.execute(f"DROP TRIGGER {name} ON chunks")
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_column("documents", "indexed_tokens")
    op.drop_column("documents", "indexed_chunks")
    op.drop_table("document_terms")
