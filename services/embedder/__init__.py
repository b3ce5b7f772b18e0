"""The embedder service: texts in, dense vectors out (sentence-transformers, dynamic batching)."""
