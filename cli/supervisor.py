"""The local stack supervisor behind `rag up`.

It starts SeaweedFS, then storage and embedder, then retriever, llm_gateway and the gateway, each
as a child process on loopback. It waits on each health check before starting what needs it,
restarts a child that dies (with backoff, once its dependencies are healthy, as Kubernetes would),
and on SIGINT/SIGTERM stops every child in reverse order. Everything lives under one data
directory: SeaweedFS volumes, state directories, caches and logs.

With `--replicas N` (DDNRAG_REPLICAS) storage and the retriever run as N processes each, replica i
on each of its ports + i x DDNRAG_STACK_REPLICA_PORT_STEP; their peers get every replica's address
in a comma-separated `*_ADDR` list, which a client channel balances round robin.

Each child gets the shell's `DDNRAG_*` variables that it reads (`child_variables`): its own
`DDNRAG_<SERVICE>_*` and the shared ones (`DDNRAG_TLS_*`, `DDNRAG_GRPC_*`, ...), never another
service's or the CLI's, so object-store credentials reach only storage and API keys only the
gateway. The supervisor's own wiring (hosts, ports, peer addresses, state directories, the
embedded store's credentials) wins over the shell. The gateway runs open
(`DDNRAG_GATEWAY_AUTH=open`, said at start) only when the stack binds loopback and the shell gives
no API keys and no `DDNRAG_GATEWAY_AUTH`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel.targets import is_loopback_host

from .monitoring import prometheus_binary, prometheus_command, write_config
from .seaweed import ensure_credentials, wait_s3_ready, weed_command, write_identities
from .stack_config import ROOT, SCALED, SERVICES, StackConfig, check_ports, replica_name

log = logging.getLogger("ddnrag.stack")
# Variables of the `rag` command itself (its API key, its object-store keys): never a child's.
CLI_ONLY = ("DDNRAG_CLI_", "DDNRAG_API_KEY")
GATEWAY_AUTH_VARS = ("DDNRAG_GATEWAY_API_KEYS", "DDNRAG_GATEWAY_API_KEYS_FILE", "DDNRAG_GATEWAY_AUTH")


def child_variables(environ: dict[str, str] | os._Environ[str], svc: str) -> dict[str, str]:
    """The `DDNRAG_*` variables of `environ` that service `svc` may see: all but other services'
    `DDNRAG_<SERVICE>_*` and the CLI's own (`DDNRAG_GATEWAY_` is not a prefix of
    `DDNRAG_LLM_GATEWAY_`, so each service's set is exact)."""
    foreign = tuple(f"DDNRAG_{other.upper()}_" for other in SERVICES if other != svc) + CLI_ONLY
    return {k: v for k, v in environ.items() if k.startswith("DDNRAG_") and not k.startswith(foreign)}


def gateway_runs_open(cfg: StackConfig, environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether `rag up` sets DDNRAG_GATEWAY_AUTH=open: a loopback stack with no keys and no auth
    setting in the shell. Anywhere else the gateway decides, and refuses to start open by accident."""
    return is_loopback_host(cfg.host) and not any(environ.get(v, "").strip() for v in GATEWAY_AUTH_VARS)


def identity(service: str, child: str) -> dict[str, str]:
    """A child's name in its log lines and trace spans (kernel/logs.py, kernel/tracing.py). Every
    other OTEL_* variable passes through from this process's environment, but one
    OTEL_SERVICE_NAME would name all five services alike, so each child gets its own."""
    return {"OTEL_SERVICE_NAME": service, "DDNRAG_REPLICA": child}


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], asyncio.Future[bool] | object]
    needs: list[str] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    healthy: bool = False
    started_at: float = 0.0
    healthy_after_s: float = 0.0


def _die_with_parent() -> None:
    """Child preexec: receive SIGTERM when the supervisor dies, so nothing is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def grpc_serving(addr: str, timeout: float = 1.0) -> bool:
    try:
        async with grpc.aio.insecure_channel(addr) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        return False


async def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


class Supervisor:
    def __init__(self, cfg: StackConfig, *, out: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out = out
        self.children: dict[str, Child] = {}
        self.stopping = asyncio.Event()
        self.gateway_open = False
        self.data = cfg.data
        (self.data / "logs").mkdir(parents=True, exist_ok=True)

    # ---- definitions -------------------------------------------------------------------------
    def _service_env(self, svc: str, port: int, metrics_port: int, state_name: str = "") -> dict[str, str]:
        prefix = f"DDNRAG_{svc.upper()}_"
        state = self.data / "state" / (state_name or svc)
        state.mkdir(parents=True, exist_ok=True)
        return {
            prefix + "HOST": self.cfg.host,
            prefix + "PORT": str(port),
            prefix + "METRICS_PORT": str(metrics_port),
            prefix + "STATE_DIR": str(state),
        }

    def replica_names(self, svc: str) -> list[str]:
        """Child names of a service: one per replica for SCALED services."""
        n = max(self.cfg.replicas, 1) if svc in SCALED else 1
        return [replica_name(svc, i) for i in range(n)]

    def define(self) -> None:
        cfg = self.cfg
        py = sys.executable
        base = {k: v for k, v in os.environ.items() if not k.startswith("DDNRAG_")}
        base.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        creds = ensure_credentials(self.data)
        identities = write_identities(self.data, creds)
        s3 = f"http://{cfg.host}:{cfg.s3_port}"

        async def seaweed_ready() -> bool:
            try:
                await asyncio.to_thread(wait_s3_ready, s3, creds, cfg.bucket, 1.0)
                return True
            except TimeoutError:
                return False

        def svc(name: str, port: int, metrics: int, needs: list[str], extra: dict[str, str]) -> list[Child]:
            """The children of service `name`: one, or one per replica for SCALED services. Storage
            replicas share one state directory (it holds only the registry's data key, which they
            must share); retriever replicas each get their own (caches)."""
            out = []
            ports, metrics_ports = cfg.replica_ports(port), cfg.replica_ports(metrics)
            for i, child in enumerate(self.replica_names(name)):
                state = name if name == "storage" else child
                env = {
                    **base,
                    **child_variables(os.environ, name),
                    **self._service_env(name, ports[i], metrics_ports[i], state),
                    **extra,
                    **identity(name, child),
                }
                argv = [py, "-m", f"services.{name}.server"]
                out.append(Child(child, argv, env, lambda p=ports[i]: grpc_serving(cfg.addr(p)), needs))  # type: ignore[misc]
            return out

        storage_env = {
            "DDNRAG_STORAGE_DEFAULT_ENDPOINT": s3,
            "DDNRAG_STORAGE_DEFAULT_BUCKET": cfg.bucket,
            "DDNRAG_STORAGE_DEFAULT_REGION": "us-east-1",
            "DDNRAG_STORAGE_DEFAULT_ACCESS_KEY_ID": creds.access_key_id,
            "DDNRAG_STORAGE_DEFAULT_SECRET_ACCESS_KEY": creds.secret_access_key,
        }
        storages, retrievers = self.replica_names("storage"), self.replica_names("retriever")
        children = [
            Child("seaweedfs", weed_command(self.data, cfg.seaweed_ports, identities), base, seaweed_ready),
            *svc("storage", cfg.storage_port, cfg.storage_metrics_port, ["seaweedfs"], storage_env),
            *svc("embedder", cfg.embedder_port, cfg.embedder_metrics_port, [], {}),
            *svc(
                "retriever",
                cfg.retriever_port,
                cfg.retriever_metrics_port,
                [*storages, "embedder"],
                {
                    "DDNRAG_RETRIEVER_EMBEDDER_ADDR": cfg.addr(cfg.embedder_port),
                    "DDNRAG_RETRIEVER_STORAGE_ADDR": cfg.addrs(cfg.storage_port),
                },
            ),
            *svc(
                "llm_gateway",
                cfg.llm_gateway_port,
                cfg.llm_gateway_metrics_port,
                [*retrievers, "embedder", *storages],
                {
                    "DDNRAG_LLM_GATEWAY_RETRIEVER_ADDR": cfg.addrs(cfg.retriever_port),
                    "DDNRAG_LLM_GATEWAY_EMBEDDER_ADDR": cfg.addr(cfg.embedder_port),
                    "DDNRAG_LLM_GATEWAY_STORAGE_ADDR": cfg.addrs(cfg.storage_port),
                },
            ),
        ]
        gw_env = {
            **base,
            **child_variables(os.environ, "gateway"),
            "DDNRAG_GATEWAY_HOST": cfg.host,
            "DDNRAG_GATEWAY_PORT": str(cfg.gateway_port),
            "DDNRAG_GATEWAY_STORAGE_ADDR": cfg.addrs(cfg.storage_port),
            "DDNRAG_GATEWAY_RETRIEVER_ADDR": cfg.addrs(cfg.retriever_port),
            "DDNRAG_GATEWAY_LLM_GATEWAY_ADDR": cfg.addr(cfg.llm_gateway_port),
            "DDNRAG_GATEWAY_EMBEDDER_ADDR": cfg.addr(cfg.embedder_port),
            "DDNRAG_GATEWAY_STATE_DIR": str(self.data / "state" / "gateway"),
            # The Metrics page's figures: the gateway scrapes each peer's metrics port itself.
            "DDNRAG_GATEWAY_METRICS_PEERS": ",".join(
                f"{job.name}=http://{target}{job.path}"
                for job in cfg.scrape_jobs()
                if job.name != "gateway"
                for target in job.targets
            ),
            **identity("gateway", "gateway"),
        }
        self.gateway_open = gateway_runs_open(cfg, os.environ)
        if self.gateway_open:
            gw_env["DDNRAG_GATEWAY_AUTH"] = "open"
        children.append(
            Child(
                "gateway",
                [py, "-m", "gateway.server"],
                gw_env,
                lambda: http_ok(f"{cfg.gateway_url}/api/health"),
                [*storages, "embedder", *retrievers, "llm_gateway"],
            )
        )
        if cfg.monitoring:
            home = self.data / "prometheus"
            write_config(home, cfg.scrape_jobs(), cfg.scrape_interval_s)
            argv = prometheus_command(prometheus_binary(), home, cfg.host, cfg.prometheus_port)
            ready = lambda: http_ok(f"{cfg.prometheus_url}/-/ready")  # noqa: E731
            children.append(Child("prometheus", argv, base, ready, ["gateway"]))
        self.children = {c.name: c for c in children}

    # ---- process control ---------------------------------------------------------------------
    async def spawn(self, child: Child) -> None:
        logf = open(self.data / "logs" / f"{child.name}.log", "ab")  # noqa: ASYNC230 - opened once per spawn, handed to the child
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            cwd=str(ROOT),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=logf,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        logf.close()
        child.healthy = False
        child.started_at = time.monotonic()

    async def wait_healthy(self, child: Child, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc is not None and child.proc.returncode is not None:
                raise RuntimeError(
                    f"{child.name} exited with code {child.proc.returncode} while starting; "
                    f"see {self.data / 'logs' / (child.name + '.log')}"
                )
            if await child.ready():  # type: ignore[misc]
                child.healthy = True
                child.healthy_after_s = time.monotonic() - child.started_at
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"{child.name} did not become healthy in {timeout_s:.0f}s; see {self.data / 'logs' / (child.name + '.log')}"
        )

    async def start_all(self) -> None:
        check_ports(self.cfg)
        self.define()
        started: set[str] = set()
        pending = dict(self.children)
        # Start in dependency waves; children with no unmet needs start together.
        while pending:
            wave = [c for c in pending.values() if all(n in started for n in c.needs)]
            for c in wave:
                await self.spawn(c)
            await asyncio.gather(*(self.wait_healthy(c, self.cfg.start_timeout_s) for c in wave))
            for c in wave:
                self.out(f"  {c.name:<12} healthy in {c.healthy_after_s:5.1f}s  (pid {c.proc.pid})")  # type: ignore[union-attr]
                started.add(c.name)
                del pending[c.name]

    async def monitor(self) -> None:
        """Restarts children that die, with backoff, once their dependencies are healthy."""
        backoff: dict[str, float] = {}
        while not self.stopping.is_set():
            for c in self.children.values():
                if c.proc is None or c.proc.returncode is None:
                    continue
                if self.stopping.is_set():
                    return
                code = c.proc.returncode
                c.healthy = False
                delay = backoff.get(c.name, 1.0)
                self.out(f"  {c.name} exited with code {code}; restarting in {delay:.0f}s (see data/logs/{c.name}.log)")
                log.warning("child exited", extra={"child": c.name, "code": code})
                await asyncio.sleep(delay)
                while not all(self.children[n].healthy for n in c.needs) and not self.stopping.is_set():
                    await asyncio.sleep(0.5)
                if self.stopping.is_set():
                    return
                c.restarts += 1
                await self.spawn(c)
                try:
                    await self.wait_healthy(c, self.cfg.start_timeout_s)
                    self.out(f"  {c.name} restarted (restart #{c.restarts}) (pid {c.proc.pid})")  # type: ignore[union-attr]
                    backoff[c.name] = 1.0
                except (RuntimeError, TimeoutError) as err:
                    self.out(f"  {c.name} did not come back: {err}")
                    backoff[c.name] = min(delay * 2, 30.0)
            # Track health of running children so dependants wait correctly after restarts.
            for c in self.children.values():
                if c.proc is not None and c.proc.returncode is None and not c.healthy:
                    c.healthy = bool(await c.ready())  # type: ignore[misc]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)

    async def stop_all(self, grace_s: float = 15.0) -> None:
        for c in reversed(list(self.children.values())):
            if c.proc is None or c.proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(c.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                await c.proc.wait()
            self.out(f"  {c.name:<12} stopped")

    def status(self) -> dict[str, dict[str, object]]:
        return {
            c.name: {
                "pid": c.proc.pid if c.proc else None,
                "running": bool(c.proc and c.proc.returncode is None),
                "healthy": c.healthy,
                "restarts": c.restarts,
            }
            for c in self.children.values()
        }
