"""Persistence: metadata in SQL (SQLAlchemy), vectors in Milvus, files on disk."""
