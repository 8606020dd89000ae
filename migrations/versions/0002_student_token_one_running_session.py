"""student token; one running session per class

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 21:10:00.000000

"""
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

student = sa.table('student', sa.column('id', sa.Integer()), sa.column('token', sa.String(length=64)))


def upgrade():
    # Every student gets a random token; browsers that joined before carry none and must join again.
    # The column stays nullable: making it NOT NULL would rebuild the table on SQLite, and dropping the
    # old table there deletes every mood sample through the cascading foreign key.
    with op.batch_alter_table('student', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    for (student_id,) in conn.execute(sa.select(student.c.id)).all():
        conn.execute(student.update().where(student.c.id == student_id).values(token=secrets.token_urlsafe(32)))

    # A class with several running sessions (two "Start a session" at once) keeps its newest one running.
    conn.execute(sa.text(
        "UPDATE class_session SET ended_at = :now WHERE ended_at IS NULL AND id < "
        "(SELECT MAX(s.id) FROM class_session s WHERE s.classroom_id = class_session.classroom_id "
        "AND s.ended_at IS NULL)"), {"now": datetime.now(UTC).replace(tzinfo=None)})
    with op.batch_alter_table('class_session', schema=None) as batch_op:
        batch_op.create_index('uq_class_session_running', ['classroom_id'], unique=True,
                              sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))


def downgrade():
    with op.batch_alter_table('class_session', schema=None) as batch_op:
        batch_op.drop_index('uq_class_session_running', sqlite_where=sa.text('ended_at IS NULL'),
                            postgresql_where=sa.text('ended_at IS NULL'))

    with op.batch_alter_table('student', schema=None) as batch_op:
        batch_op.drop_column('token')
