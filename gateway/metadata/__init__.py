"""Metadata in SQL: the index of buckets, objects and identities (the backend holds bytes)."""
