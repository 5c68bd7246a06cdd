"""document_terms and documents.indexed_chunks/indexed_tokens: BM25's collection statistics kept by triggers

The lexical arm of retrieval (``app.rag.retrieval.lexical_ranking``) scores chunks by BM25, which needs the
number of the coach's searchable chunks, their mean length and each query word's document frequency. Until
now one query computed them from the chunks themselves: every query read all of the coach's chunks (with the
row-level security issue below, 15 s at the median for a coach of 150,000 chunks in ``bench/lexical.py``). Now:

- ``document_terms``: per document, each lexeme of its chunks' ``tsv`` with the number of its chunks holding
  it (``df``); a word's frequency over the coach's searchable documents is a sum over at most one row per
  document (index on ``coach_id, term``).
- ``documents.indexed_chunks`` and ``indexed_tokens``: the document's chunks and the sum of their
  ``token_count``.

Statement-level triggers on ``chunks`` (with transition tables) keep both exact for every write: inserts,
deletes (a re-run, a cascade from a deleted document or coach) and updates of the searched text (a new vector
alone costs a join of the update's rows). They run as the writer, so row-level security applies to
``document_terms`` as to every tenant table. Existing chunks are counted once here.

``bm25_ranking(query, model, n, k1, b, budget, scan)`` ranks the current tenant's searchable chunks (documents
embedded with ``model`` that did not fail) by BM25 (Robertson & Zaragoza 2009; Lucene's idf) and returns the
top ``n`` chunk ids, best first:

- the collection statistics come from the tables above: the chunk count and mean length (cl100k tokens) from
  the documents' counters, each query word's document frequency from ``document_terms`` (a sum over at most
  one row per document);
- the chunks scored are those holding the rarest query words, word by word while their document frequencies
  add up to at most ``budget`` (always the rarest word), each scored over all query words: the "continue"
  strategy of Moffat & Zobel (1996, "Self-indexing inverted files for fast text retrieval", ACM TOIS 14(4)),
  rarest terms first, the commoner ones only adding to the chunks already found. While every query word fits
  in the budget (any coach of up to ``budget`` chunks) the ranking is exact BM25;
- they are found through ``ix_chunks_tsv``, or, for a coach of at most ``scan`` chunks, by testing each of the
  coach's chunks (found through ``ix_chunks_coach_id``): the full-text index holds every coach's chunks, and a
  common word's postings of all coaches cost more to read than a small coach's chunks (the branch not taken
  is skipped at run time: a one-time filter);
- only the query's words of a chunk are unnested: ``setweight(tsv, 'A', words)`` marks them and
  ``ts_filter(…, '{a}')`` keeps them (``to_tsvector`` gives every position weight D).

It is a SECURITY DEFINER function owned by the migrating role, like ``inbox_search`` (0027) and for the same
reason: ``@@`` is not LEAKPROOF, so under the app role's tenant policy PostgreSQL filters every chunk of the
coach before it may use ``ix_chunks_tsv`` (this statement took 10 s for a coach of 150,000 chunks as the app
role). The owner's read-only
``bm25_ranking`` policies on the three tables leave no policy condition first; the function filters by
``app_current_coach_id()`` itself, and the app role may only execute it.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.core.runtime import APP_ROLE

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


RANKED_TABLES = ("documents", "chunks", "document_terms")
SIGNATURE = "bm25_ranking(text, text, integer, float8, float8, float8, float8)"
RANKING = """
    CREATE FUNCTION bm25_ranking(p_query text, p_model text, p_n integer, p_k1 float8, p_b float8, p_budget float8,
                                 p_scan float8)
    RETURNS TABLE (chunk_id uuid) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    WITH docs AS (SELECT id, indexed_chunks, indexed_tokens FROM documents
                  WHERE coach_id = app_current_coach_id() AND embedding_model = p_model AND status <> 'failed'),
    collection AS (SELECT coalesce(sum(indexed_chunks), 0)::float8 AS n,
                          greatest(coalesce(sum(indexed_tokens), 0)::float8 / greatest(sum(indexed_chunks), 1), 1)
                              AS avgdl
                   FROM docs),
    params AS (SELECT CAST(p_k1 AS float8) AS k1, CAST(p_b AS float8) AS b),
    words AS (SELECT DISTINCT t.word FROM unnest(to_tsvector('english', p_query)) AS t(word, positions, weights)),
    frequencies AS (SELECT w.word, (SELECT coalesce(sum(dt.df), 0) FROM document_terms dt
                                    WHERE dt.coach_id = app_current_coach_id() AND dt.term = w.word
                                      AND dt.document_id IN (SELECT id FROM docs))::float8 AS df
                    FROM words w),
    terms AS MATERIALIZED (
        SELECT f.word, ln(1 + (c.n - f.df + 0.5) / (f.df + 0.5)) AS idf,
               sum(f.df) OVER (ORDER BY f.df, f.word) AS postings, row_number() OVER (ORDER BY f.df, f.word) AS rarity
        FROM frequencies f CROSS JOIN collection c WHERE f.df > 0
    ),
    candidates AS (SELECT string_agg(quote_literal(word), ' | ')::tsquery AS q FROM terms
                   WHERE postings <= p_budget OR rarity = 1),
    matched AS MATERIALIZED (
        SELECT ch.id, ch.token_count, ch.tsv FROM chunks ch
        WHERE (SELECT n FROM collection) <= p_scan AND ch.coach_id = app_current_coach_id()
          AND ch.document_id IN (SELECT id FROM docs) AND (ch.tsv @@ (SELECT q FROM candidates)) IS TRUE
        UNION ALL
        SELECT ch.id, ch.token_count, ch.tsv FROM chunks ch
        WHERE (SELECT n FROM collection) > p_scan AND ch.coach_id = app_current_coach_id()
          AND ch.document_id IN (SELECT id FROM docs) AND ch.tsv @@ (SELECT q FROM candidates)
    ),
    hits AS MATERIALIZED (
        SELECT m.id, m.token_count, t.word, coalesce(array_length(t.positions, 1), 1) AS tf
        FROM matched m
        CROSS JOIN LATERAL unnest(ts_filter(setweight(m.tsv, 'A', (SELECT array_agg(word) FROM terms)), '{a}'))
            AS t(word, positions, weights)
    )
    SELECT h.id AS chunk_id FROM hits h JOIN terms t USING (word) CROSS JOIN params p CROSS JOIN collection c
    GROUP BY h.id
    ORDER BY sum(t.idf * h.tf * (p.k1 + 1) / (h.tf + p.k1 * (1 - p.b + p.b * h.token_count / c.avgdl))) DESC, h.id
    LIMIT p_n
    $$
"""
"""The top ``p_n`` of the current tenant's chunks for ``p_query`` by BM25, best first (see the module)."""


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
    # the ranking reads as the owner, whose read-all policies leave no policy condition ahead of `tsv @@ query`
    # (not LEAKPROOF): under the app role's tenant policy PostgreSQL cannot use ix_chunks_tsv (as in 0027)
    for table in RANKED_TABLES:
        op.execute(f"CREATE POLICY bm25_ranking ON {table} FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(RANKING)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")
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
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    for table in RANKED_TABLES:
        op.execute(f"DROP POLICY bm25_ranking ON {table}")
    for name in ("chunks_added", "chunks_removed", "chunks_changed"):
        op.execute(f"DROP TRIGGER {name} ON chunks")
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_column("documents", "indexed_tokens")
    op.drop_column("documents", "indexed_chunks")
    op.drop_table("document_terms")
