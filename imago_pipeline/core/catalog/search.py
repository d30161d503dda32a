"""Full-text search over what the pipeline read in an image (OCR text, vision description and tags).

SQLite uses an FTS5 table (rowid = image id); Postgres a generated `tsvector` with a GIN index. The
'simple' configuration does no stemming, because a catalog mixes English and French text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def replace_documents(session: Session, documents: Iterable[tuple[int, int, str]]) -> None:
    """(image_id, tenant_id, body) rows replace what is indexed for those images; empty bodies are removed."""
    documents = list(documents)
    if not documents:
        return
    ids = [{"id": image_id} for image_id, _, _ in documents]
    rows = [{"id": i, "tenant": t, "body": b} for i, t, b in documents if b.strip()]
    if _is_sqlite(session):
        session.execute(text("DELETE FROM image_search WHERE rowid = :id"), ids)
        if rows:
            session.execute(text("INSERT INTO image_search (rowid, tenant_id, body) VALUES (:id, :tenant, :body)"),
                            rows)
    else:
        session.execute(text("DELETE FROM image_search WHERE image_id = :id"), ids)
        if rows:
            session.execute(text("INSERT INTO image_search (image_id, tenant_id, body) VALUES (:id, :tenant, :body)"),
                            rows)


def delete_documents(session: Session, image_ids: list[int]) -> None:
    column = "rowid" if _is_sqlite(session) else "image_id"
    session.execute(text(f"DELETE FROM image_search WHERE {column} = :id"), [{"id": i} for i in image_ids])  # noqa: S608  (the column is one of two fixed names; values are bound)


def matching_image_ids(session: Session, tenant_id: int, query: str) -> list[int]:
    """Images of the tenant whose indexed text contains every word of the query."""
    words = re.findall(r"\w+", query)
    if not words:
        return []
    if _is_sqlite(session):
        fts_query = " ".join('"' + w.replace('"', "") + '"' for w in words)  # each word literal, all required
        rows = session.execute(text("SELECT rowid FROM image_search WHERE image_search MATCH :q AND tenant_id = :t"),
                               {"q": fts_query, "t": tenant_id})
    else:
        rows = session.execute(text("SELECT image_id FROM image_search "
                                    "WHERE tsv @@ plainto_tsquery('simple', :q) AND tenant_id = :t"),
                               {"q": " ".join(words), "t": tenant_id})
    return [row[0] for row in rows]
