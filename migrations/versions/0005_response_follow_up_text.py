"""response follow-up text (what we did to cause a "No, never")

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 05:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follow_up_text', sa.Text(), server_default='', nullable=False))


def downgrade():
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_column('follow_up_text')
