"""The shared backend registry without a network: sealing secrets with AES-256-GCM, the data key
file, conditional writes that never lose a concurrent change, refusing an invalid document, and
importing an old state directory. The store here is an in-memory object with the same
conditional-write semantics as S3 (tests/integration/test_storage_replicas.py runs the real one)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import threading
from pathlib import Path

import pytest

from kernel.errors import ErrorKind, ServiceError
from services.storage.model import BackendSpec, Credentials, Kind
from services.storage.registry import BackendRegistry
from services.storage.registry_store import RegistryConflict
from services.storage.sealing import SecretBox, load_or_create_key, parse_key

SECRET = "s3cr3t-VALUE-never-shown"
KEY = bytes(range(32))


class MemoryStore:
    """One object with S3's conditional PUT/GET semantics."""

    key = "_ddnrag/storage/backends.json"

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.writes = 0
        self.lock = threading.Lock()

    @property
    def etag(self) -> str:
        return f'"{hashlib.md5(self.body or b"").hexdigest()}"'

    def read(self, etag: str) -> tuple[bytes, str] | bool | None:
        with self.lock:
            if self.body is None:
                return None
            if etag and etag == self.etag:
                return False
            return self.body, self.etag

    def write(self, body: bytes, if_match: str) -> str:
        with self.lock:
            if (self.body is None and if_match) or (self.body is not None and if_match != self.etag):
                raise RegistryConflict(self.key)
            self.body = body
            self.writes += 1
            return self.etag


def spec(**kw: object) -> BackendSpec:
    base: dict[str, object] = dict(name="b1", kind=Kind.S3_COMPATIBLE, endpoint="http://h:1", bucket="bk")
    base.update(kw)
    return BackendSpec(**base)  # type: ignore[arg-type]


def registry(store: MemoryStore, key: bytes = KEY, legacy_dir: Path | None = None) -> BackendRegistry:
    reg = BackendRegistry(spec(name="local"), Credentials("DEF", SECRET), store, SecretBox(key), legacy_dir)
    reg.refresh()
    return reg


# --- sealing ------------------------------------------------------------------------------


def test_sealed_secret_opens_only_with_its_key_and_name() -> None:
    box = SecretBox(KEY)
    sealed = box.seal("ddn", {"secret_access_key": SECRET})
    assert SECRET not in json.dumps(sealed) and sealed["alg"] == "AES-256-GCM"
    assert box.open("ddn", sealed) == {"secret_access_key": SECRET}
    assert box.seal("ddn", {"x": "y"})["nonce"] != box.seal("ddn", {"x": "y"})["nonce"]
    cases = [
        (SecretBox(bytes(32)), "ddn", sealed, "sealed with registry key"),  # another replica's key
        (box, "other", sealed, "does not open"),  # copied to another backend's entry
        (box, "ddn", {**sealed, "ciphertext": base64.b64encode(b"x" * 40).decode()}, "does not open"),
    ]
    for b, name, value, words in cases:
        with pytest.raises(ServiceError) as ei:
            b.open(name, value)
        assert ei.value.reason == "REGISTRY_KEY_UNUSABLE" and words in ei.value.message
        assert SECRET not in ei.value.message


def test_key_file_is_generated_0600_once_and_parsed_in_three_forms(tmp_path: Path) -> None:
    path = tmp_path / "state" / "registry.key"
    key = load_or_create_key(path, create=True)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path, create=True) == key  # not regenerated
    assert parse_key(KEY, "x") == KEY
    assert parse_key(base64.b64encode(KEY) + b"\n", "x") == KEY
    assert parse_key(KEY.hex().encode(), "x") == KEY
    with pytest.raises(ServiceError) as ei:
        parse_key(b"short", "the registry data key '/k'")
    assert ei.value.reason == "REGISTRY_KEY_UNUSABLE" and "32-byte" in ei.value.message
    with pytest.raises(ServiceError) as ei:
        load_or_create_key(tmp_path / "missing", create=False)
    assert "cannot be read" in ei.value.message


# --- the registry -------------------------------------------------------------------------


def test_registry_is_shared_and_holds_no_plain_secret() -> None:
    store = MemoryStore()
    a, b = registry(store), registry(store)
    a.put(spec(name="ddn", kind=Kind.DDN_INFINIA), Credentials("AKDDN", SECRET))
    a.put(spec(name="env", credentials_env_prefix="ENVP"), None)
    assert store.body is not None and SECRET.encode() not in store.body and b"AKDDN" not in store.body
    b.refresh()
    assert [s.name for s in b.list()] == ["local", "ddn", "env"]
    assert b.get("ddn").kind is Kind.DDN_INFINIA and b.get("ddn").inline_credentials
    assert b.credentials(b.get("ddn")) == Credentials("AKDDN", SECRET)
    assert b.credentials(b.get("")) == Credentials("DEF", SECRET)
    assert not b.has_credentials(b.get("env"))  # ENVP_* unset: reported, not raised
    assert b.take_changed() == {"ddn", "env"} and b.take_changed() == set()
    b.remove("ddn")
    a.refresh()
    assert a.take_changed() >= {"ddn"} and "ddn" not in json.loads(store.body)["sealed_secrets"]
    with pytest.raises(ServiceError) as ei:
        a.get("ddn")
    assert ei.value.kind is ErrorKind.NOT_FOUND
    for call in (lambda: a.remove("local"), lambda: a.put(spec(name="local"), None)):
        with pytest.raises(ServiceError) as ei:
            call()
        assert ei.value.kind is ErrorKind.FAILED_PRECONDITION


def test_a_replica_with_another_key_says_so() -> None:
    store = MemoryStore()
    registry(store).put(spec(name="ddn"), Credentials("AK", SECRET))
    other = registry(store, key=bytes(32))
    assert not other.has_credentials(other.get("ddn"))
    with pytest.raises(ServiceError) as ei:
        other.credentials(other.get("ddn"))
    assert "DDNRAG_STORAGE_REGISTRY_KEY_FILE" in ei.value.message


def test_concurrent_changes_from_two_replicas_both_land() -> None:
    store = MemoryStore()
    replicas = [registry(store) for _ in range(4)]
    errors: list[BaseException] = []

    def add(reg: BackendRegistry, i: int) -> None:
        try:
            for j in range(5):
                reg.put(spec(name=f"r{i}-{j}"), Credentials(f"AK{i}{j}", SECRET))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=add, args=(r, i)) for i, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check = registry(store)
    assert len(check.list()) == 1 + 20
    assert check.credentials(check.get("r3-4")) == Credentials("AK34", SECRET)
    assert json.loads(store.body or b"")["revision"] == 20 == store.writes


def test_stale_write_is_redone_on_top_of_the_newer_version() -> None:
    store = MemoryStore()
    a, b = registry(store), registry(store)
    a.put(spec(name="one"), None)
    b.put(spec(name="two"), None)  # b had not seen "one": its first conditional write is refused
    assert [s.name for s in registry(store).list()] == ["local", "one", "two"]


def test_invalid_document_is_refused_and_the_loaded_version_stays_live() -> None:
    store = MemoryStore()
    a = registry(store)
    a.put(spec(name="good"), None)
    b = registry(store)
    store.body = store.body[:40]  # type: ignore[index] - a truncated document
    with pytest.raises(ServiceError) as ei:
        b.refresh()
    assert ei.value.reason == "REGISTRY_INVALID" and "stays live" in ei.value.message
    assert [s.name for s in b.list()] == ["local", "good"]
    b.refresh()  # the same bad version is reported once, not on every poll
    b.put(spec(name="next"), None)  # a write replaces it with a valid one
    assert [s.name for s in registry(store).list()] == ["local", "good", "next"]


def test_bad_spec_is_rejected_without_writing() -> None:
    store = MemoryStore()
    with pytest.raises(ServiceError):
        registry(store).put(spec(name="Bad"), None)
    assert store.body is None


def test_old_state_directory_is_imported_once_and_its_plain_secrets_deleted(tmp_path: Path) -> None:
    old = {"backends": [{"name": "ddn", "kind": "ddn_infinia", "endpoint": "http://h:1", "bucket": "b"}]}
    old["backends"][0]["inline_credentials"] = True
    (tmp_path / "backends.json").write_text(json.dumps(old))
    (tmp_path / "secrets.json").write_text(json.dumps({"ddn": {"access_key_id": "AK", "secret_access_key": SECRET}}))
    store = MemoryStore()
    reg = registry(store, legacy_dir=tmp_path)
    assert reg.credentials(reg.get("ddn")) == Credentials("AK", SECRET)
    assert not (tmp_path / "secrets.json").exists() and (tmp_path / "backends.json.imported").exists()
    assert SECRET.encode() not in (store.body or b"")
    assert [s.name for s in registry(store, legacy_dir=tmp_path).list()] == ["local", "ddn"]


def test_unreadable_old_state_directory_is_reported_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "backends.json").write_text("{not json")
    store = MemoryStore()
    reg = BackendRegistry(spec(name="local"), None, store, SecretBox(KEY), tmp_path)
    with pytest.raises(ServiceError) as ei:
        reg.refresh()
    assert ei.value.reason == "REGISTRY_IMPORT_FAILED" and str(tmp_path) in ei.value.message
    assert not reg.loaded and store.body is None
