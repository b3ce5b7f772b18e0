"""The retriever service: parsing, chunking, ingestion jobs, the hybrid index and search."""
