"""Parts of `bench/retriever_scale.py` that are not benchmarks of their own (no results file):
`merge.py` measures search latency while a merge runs."""
