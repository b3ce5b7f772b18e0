"""Parts of bench/retriever.py."""
