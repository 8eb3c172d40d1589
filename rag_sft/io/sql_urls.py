"""Database URLs as the stores and sources use them: which engine a URL names, and how it may be
shown (its password masked). A leaf: the SQL source, the state database and the LLM answer cache
all import it, and it imports none of them."""

from __future__ import annotations


def is_postgres_url(url: str) -> bool:
    return url.startswith("postgresql")


def redacted_sql_url(url: str) -> str:
    """The URL as it may be shown: its password masked; a URL SQLAlchemy cannot read is not
    shown at all (where a password would sit in it is unknown)."""
    import sqlalchemy as sa  # only when a URL is shown: a landing-folder run never loads SQLAlchemy

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<a URL SQLAlchemy cannot read>"
