"""The manifests' share of issue 21: the storage egress excludes link-local and private ranges
(finding 9), each service mounts its own mTLS certificate and the oci overlay turns gRPC
reflection off (finding 6), and the gateway's keys are required (finding 1)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
GRPC_APPS = {"embedder", "storage", "retriever", "llm-gateway"}
INTERNAL = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"}


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", ["local", "oci"])
def test_storage_egress_to_any_address_excludes_internal_ranges(overlay: str) -> None:
    policy = _named(_render(overlay), "NetworkPolicy", "storage")
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if block and block["cidr"] in ("0.0.0.0/0", "::/0"):
                assert INTERNAL <= set(block.get("except", [])), block


def test_oci_mounts_one_certificate_per_service_and_serves_no_reflection() -> None:
    objs = _render("oci")
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    seen_secrets = set()
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        app = o["metadata"]["name"]
        pod = o["spec"]["template"]["spec"]
        secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        mtls = {s for s in secrets if s.startswith("ddnrag-mtls")}
        if app in GRPC_APPS | {"gateway"}:
            assert mtls == {f"ddnrag-mtls-{app}"}, (app, mtls)
            seen_secrets |= mtls
        if app in GRPC_APPS:
            env: dict[str, str] = {}
            for src in pod["containers"][0].get("envFrom", []):
                env.update(configmaps.get(src.get("configMapRef", {}).get("name", ""), {}))
            assert env.get("DDNRAG_GRPC_REFLECTION") == "false", app
    assert len(seen_secrets) == 5


def test_base_gateway_requires_keys() -> None:
    env = dict(
        line.split("=", 1)
        for line in (K8S / "base" / "config" / "gateway.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["DDNRAG_GATEWAY_AUTH"] == "keys" and env["DDNRAG_GATEWAY_API_KEYS_FILE"]
    assert float(env["DDNRAG_GATEWAY_RATE_LIMIT_RPS"]) > 0
