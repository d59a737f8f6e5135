"""Alembic migrations of sagad's schema (async env)."""
