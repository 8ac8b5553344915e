"""Helpers shared by the registry/runner tests: an isolated PostgreSQL schema per test."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import create_engine, text


@contextmanager
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema (dropped afterwards): tests never share tables."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    eng = create_engine(pg_url)
    with eng.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with eng.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        eng.dispose()
