"""Configuration of the storage service, read from `DDNRAG_STORAGE_*` variables."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.config import env_field


@dataclass(frozen=True)
class StorageConfig:
    """Every field names its variable; `load_env(StorageConfig)` builds it."""

    host: str = env_field("DDNRAG_STORAGE_HOST", "127.0.0.1", "address the gRPC server binds")
    port: int = env_field("DDNRAG_STORAGE_PORT", 50052, "gRPC port (0 picks a free one)")
    metrics_port: int = env_field("DDNRAG_STORAGE_METRICS_PORT", 9102, "Prometheus port (0 disables)")
    shutdown_grace_s: float = env_field(
        "DDNRAG_STORAGE_SHUTDOWN_GRACE_S", 10.0, "seconds in-flight RPCs get on SIGTERM"
    )
    log_level: str = env_field("DDNRAG_STORAGE_LOG_LEVEL", "INFO", "log level")
    state_dir: str = env_field(
        "DDNRAG_STORAGE_STATE_DIR",
        "./data/storage",
        "local files: the generated registry data key (registry.key, 0600) when no key file is given; a "
        "backends.json from an older release found here is imported into the shared registry once",
    )

    # The registry of backends added at run time: one object in the default backend, shared by
    # every replica (registry.py).
    registry_key: str = env_field(
        "DDNRAG_STORAGE_REGISTRY_KEY",
        "_ddnrag/storage/backends.json",
        "object key, in the default backend's bucket, of the shared registry of backends added at run time",
    )
    registry_key_file: str = env_field(
        "DDNRAG_STORAGE_REGISTRY_KEY_FILE",
        "",
        "file holding the 32-byte AES-256-GCM data key (base64) that seals inline secrets in the registry, e.g. a "
        "mounted Kubernetes Secret; every replica needs the same one. Empty: <state_dir>/registry.key, generated "
        "0600 on first start",
    )
    registry_poll_s: float = env_field(
        "DDNRAG_STORAGE_REGISTRY_POLL_S",
        0.5,
        "how often each replica checks the shared registry for changes (a conditional GET; 0 turns polling off)",
    )

    # The embedded default backend (the local SeaweedFS in `rag up`).
    default_backend_name: str = env_field("DDNRAG_STORAGE_DEFAULT_BACKEND_NAME", "local", "name of the default backend")
    default_kind: str = env_field(
        "DDNRAG_STORAGE_DEFAULT_KIND",
        "s3_compatible",
        "kind of the default backend: s3_compatible, ddn_infinia or aws_s3",
    )
    default_endpoint: str = env_field(
        "DDNRAG_STORAGE_DEFAULT_ENDPOINT", "http://127.0.0.1:8333", "S3 endpoint URL of the default backend"
    )
    default_bucket: str = env_field("DDNRAG_STORAGE_DEFAULT_BUCKET", "ddnrag", "bucket of the default backend")
    default_region: str = env_field("DDNRAG_STORAGE_DEFAULT_REGION", "us-east-1", "region of the default backend")
    default_access_key_id: str = env_field(
        "DDNRAG_STORAGE_DEFAULT_ACCESS_KEY_ID", "", "access key id of the default backend (never logged)"
    )
    default_secret_access_key: str = env_field(
        "DDNRAG_STORAGE_DEFAULT_SECRET_ACCESS_KEY", "", "secret access key of the default backend (never logged)"
    )
    default_credentials_file: str = env_field(
        "DDNRAG_STORAGE_DEFAULT_CREDENTIALS_FILE",
        "",
        "file (JSON, KEY=VALUE or AWS ini) or mounted Kubernetes Secret directory with the default backend's "
        "credentials; used when the two key variables are empty",
    )
    default_ca_bundle: str = env_field(
        "DDNRAG_STORAGE_DEFAULT_CA_BUNDLE", "", "CA bundle path for the default backend's TLS; empty: system store"
    )
    default_insecure_skip_verify: bool = env_field(
        "DDNRAG_STORAGE_DEFAULT_INSECURE_SKIP_VERIFY",
        False,
        "skip TLS verification of the default backend (explicit opt-out, logged as a warning)",
    )

    # Transfers.
    max_concurrency: int = env_field(
        "DDNRAG_STORAGE_MAX_CONCURRENCY",
        64,
        "threads running blocking S3 calls, and HTTP connections per backend (the pool fits the executor)",
    )
    multipart_threshold_bytes: int = env_field(
        "DDNRAG_STORAGE_MULTIPART_THRESHOLD_BYTES", 16 * 1024 * 1024, "objects above this size go up in parts"
    )
    multipart_part_bytes: int = env_field(
        "DDNRAG_STORAGE_MULTIPART_PART_BYTES", 8 * 1024 * 1024, "part size of multipart uploads (>= 5 MiB)"
    )
    get_chunk_bytes: int = env_field(
        "DDNRAG_STORAGE_GET_CHUNK_BYTES", 1024 * 1024, "size of the data messages a Get streams"
    )
    max_retries: int = env_field(
        "DDNRAG_STORAGE_MAX_RETRIES", 4, "retries after throttling (503 SlowDown, RequestTimeout) or transient errors"
    )
    retry_base_ms: float = env_field(
        "DDNRAG_STORAGE_RETRY_BASE_MS", 50.0, "base of the jittered exponential backoff between retries"
    )
    connect_timeout_s: float = env_field("DDNRAG_STORAGE_CONNECT_TIMEOUT_S", 3.0, "S3 connect timeout")
    read_timeout_s: float = env_field("DDNRAG_STORAGE_READ_TIMEOUT_S", 30.0, "S3 read timeout")
    max_batch_items: int = env_field(
        "DDNRAG_STORAGE_MAX_BATCH_ITEMS", 1000, "the most items one BatchGet/BatchPut/Delete may carry"
    )
    max_batch_item_bytes: int = env_field(
        "DDNRAG_STORAGE_MAX_BATCH_ITEM_BYTES", 8 * 1024 * 1024, "the largest object one BatchPut item may carry"
    )
    # GETs of path-style backends skip botocore's per-call machinery (fastget.py: same signer, same
    # errors); False sends every GET through boto3. Not an environment variable (yet): tests use it
    # to check both paths agree.
    fast_get: bool = True
    # Whole-object GETs of plain-HTTP path-style backends run on the event loop (aioget.py) rather
    # than in an executor thread; False keeps them on fastget.py. Not an environment variable
    # either: tests compare the paths, and the README's side-by-side figures used it.
    loop_get: bool = True
    endpoint_allowlist: tuple[str, ...] = env_field(
        "DDNRAG_STORAGE_ENDPOINT_ALLOWLIST",
        (),
        "internal endpoints backends added at run time may reach: CIDRs, host names or host:port (comma-separated)",
    )
    max_benchmark_concurrency: int = env_field(
        "DDNRAG_STORAGE_MAX_BENCHMARK_CONCURRENCY", 500, "the highest concurrency level a benchmark may ask for"
    )
