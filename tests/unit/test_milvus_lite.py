"""What milvus-lite (the pinned 3.2.2) does, as the README states it: full-text search (a BM25
function over an analysed VARCHAR) works, but only with the `standard`/`jieba` tokenizers, ignores
the index's bm25_k1/bm25_b, and reports each hit's distance as minus its BM25 score (best first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.retriever.milvus_hybrid import client_for

pytestmark = pytest.mark.slow  # milvus-lite starts a server per file: seconds per test

DOCS = [
    "GPUs run thousands of threads and tensor cores multiply matrices",
    "Object storage keeps objects in buckets; time to first byte matters",
    "Bread needs flour water salt and yeast",
    "tensor tensor tensor matrix",
]


def bm25_collection(client: Any, name: str, analyzer: dict[str, Any], params: dict[str, float]) -> None:
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=4000, enable_analyzer=True, analyzer_params=analyzer)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25", function_type=FunctionType.BM25, input_field_names=["text"], output_field_names=["sparse"]
        )
    )
    idx = client.prepare_index_params()
    idx.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params=params)
    client.create_collection(name, schema=schema, index_params=idx)
    client.insert(name, [{"id": i, "text": d} for i, d in enumerate(DOCS)])
    client.flush(name)


def bm25_search(client: Any, name: str, query: str) -> list[tuple[int, float]]:
    res = client.search(name, data=[query], anns_field="sparse", limit=3, search_params={"metric_type": "BM25"})
    return [(int(h["id"]), float(h["distance"])) for h in res[0]]


def test_milvus_lite_full_text_search(tmp_path: Path) -> None:
    from pymilvus import MilvusException

    client = client_for(str(tmp_path / "ft.db"))
    with pytest.raises(MilvusException, match="unknown tokenizer type"):
        bm25_collection(client, "english", {"type": "english"}, {})
    bm25_collection(client, "lucene", {"type": "standard"}, {"bm25_k1": 0.9, "bm25_b": 0.4})
    bm25_collection(client, "other", {"type": "standard"}, {"bm25_k1": 2.0, "bm25_b": 0.0})
    hits = bm25_search(client, "lucene", "tensor matrices")
    assert [i for i, _ in hits] == [0, 3]  # both tensor documents, the one matching two terms first
    assert all(d < 0 for _, d in hits) and hits[0][1] < hits[1][1]  # distance = -score, best first
    assert bm25_search(client, "other", "tensor matrices") == hits  # k1 and b made no difference
    assert [i for i, _ in bm25_search(client, "lucene", "bread yeast")] == [2]
