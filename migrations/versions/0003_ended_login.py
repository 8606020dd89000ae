"""ended teacher logins, kept across restarts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 05:45:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'ended_login',
        sa.Column('login', sa.String(length=64), nullable=False),
        sa.Column('until', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('login'),
    )
    with op.batch_alter_table('ended_login', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ended_login_until'), ['until'], unique=False)


def downgrade():
    with op.batch_alter_table('ended_login', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ended_login_until'))
    op.drop_table('ended_login')
