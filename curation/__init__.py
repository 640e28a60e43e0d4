"""Curation stages: pure library code (no Ray) for documents, pairs, PDF pages, shards and ledgers."""
