"""Health check."""

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db


def database_ok() -> bool:
    """True when the database answers a trivial query."""
    try:
        db.session.execute(sa.text("SELECT 1"))
        db.session.rollback()
    except SQLAlchemyError:
        db.session.rollback()
        return False
    return True
