"""clients.widget_token_hash / widget_token_encrypted nullable: a revoked widget token is NULL

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 09:00:00

Every table holding a client's data already reaches ``clients`` or ``conversations`` through an
``ON DELETE CASCADE`` foreign key (revisions 0001-0005), so erasing a client is one ``DELETE FROM clients``;
this revision only lets a client exist without a valid widget token (revoked until rotated).
``auth_widget_token(hash)`` matches ``widget_token_hash = hash``, which is never true for NULL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("clients", "widget_token_hash", existing_type=sa.String(length=64), nullable=True)
    op.alter_column("clients", "widget_token_encrypted", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # a revoked client gets an unusable token again (a hash of nothing anyone holds, an empty ciphertext)
    op.execute(
        "UPDATE clients SET widget_token_hash = encode(sha256(gen_random_uuid()::text::bytea), 'hex'), "
        "widget_token_encrypted = ''::bytea WHERE widget_token_hash IS NULL"
    )
    op.alter_column("clients", "widget_token_encrypted", existing_type=sa.LargeBinary(), nullable=False)
    op.alter_column("clients", "widget_token_hash", existing_type=sa.String(length=64), nullable=False)
