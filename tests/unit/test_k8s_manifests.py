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

import json
import re
from typing import Any

import pytest
import yaml

from kernel.authz import GrpcExposureConfig
from kernel.config import env_vars, load_env
from kernel.tls import TlsConfig
from tests.support.k8s import (
    CALL_GRAPH,
    CRD_KINDS,
    K8S,
    NAMESPACE,
    SECRET_VARS,
    SERVICES,
    TARGET_IDS,
    app_of,
    config_class,
    container_env,
    containers,
    get_object,
    load_config,
    main_container,
    mounted,
    objects_of,
    port_of,
    service_workload,
    workloads_of,
)

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
        assert not objects_of(objs, "Secret"), f"{target} renders a Secret: secrets are never committed"


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
    for workload in workloads_of(rendered[target]):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        # Only the retriever talks to the Kubernetes API (the ingestion Lease, rbac.yaml).
        assert pod.get("automountServiceAccountToken") is (name == "StatefulSet/retriever"), name
        for c in containers(workload):
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
            if c in pod["containers"] and app_of(workload) in SERVICES:
                assert "/tmp" in mounts, f"{where}: /tmp is not a volume"


# ----------------------------------------------------------------------------- parity with the code


@pytest.mark.parametrize("target", TARGET_IDS)
@pytest.mark.parametrize("app", sorted(SERVICES))
def test_env_matches_config_dataclass(rendered: dict[str, list[dict[str, Any]]], target: str, app: str) -> None:
    objs = rendered[target]
    cls = config_class(SERVICES[app][0])
    env = container_env(objs, main_container(service_workload(objs, app)))
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


@pytest.mark.parametrize("target", TARGET_IDS)
@pytest.mark.parametrize("app", sorted(SERVICES))
def test_config_loads_and_matches_ports_probes_and_grace(
    rendered: dict[str, list[dict[str, Any]]], target: str, app: str
) -> None:
    objs = rendered[target]
    cfg = load_config(objs, app)
    workload = service_workload(objs, app)
    pod = workload["spec"]["template"]["spec"]
    c = main_container(workload)
    _, port_name, is_grpc = SERVICES[app]

    assert cfg.host == "0.0.0.0", f"{app} must bind every interface in a pod"
    assert port_of(c, port_name) == cfg.port
    if hasattr(cfg, "metrics_port"):
        assert port_of(c, "metrics") == cfg.metrics_port
    probes = {k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c}
    assert {"readinessProbe", "livenessProbe"} <= set(probes), app
    # With mTLS, kubelet (which cannot do TLS) probes the plaintext health-only port.
    tls_cfg = load_env(TlsConfig, {k: v or "" for k, v in container_env(objs, c).items()})
    probe_port = tls_cfg.health_port if tls_cfg.enabled and tls_cfg.health_port else cfg.port
    for kind, probe in probes.items():
        if is_grpc:
            assert "grpc" in probe, f"{app} {kind} must be a native grpc probe"
            assert probe["grpc"]["port"] == probe_port, f"{app} {kind} probes another port than the config's"
        else:
            assert port_of(c, probe["httpGet"]["port"]) == cfg.port, f"{app} {kind}"
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
        assert mounted(c, cfg.state_dir), f"{app}: STATE_DIR {cfg.state_dir} is not on a writable volume"


ADDR = re.compile(r"^dns:///(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local:(?P<port>\d+)$")


@pytest.mark.parametrize("target", TARGET_IDS)
def test_peer_addresses_are_headless_round_robin_names(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    """Each *_ADDR is dns:///<svc>-headless.<ns>.svc.cluster.local:<the callee's configured port>."""
    objs = rendered[target]
    config_of = {app: load_config(objs, app) for app in SERVICES}
    app_of_prefix = {f"DDNRAG_{a.upper().replace('-', '_')}_": a for a in SERVICES}
    checked = 0
    for app in SERVICES:
        env = container_env(objs, main_container(service_workload(objs, app)))
        for var, value in env.items():
            if not var.endswith("_ADDR") or not var.startswith("DDNRAG_"):
                continue
            m = ADDR.match(value or "")
            assert m, f"{var}={value!r} is not a dns:/// name of a headless Service"
            assert m["ns"] == NAMESPACE, var
            svc = get_object(objs, "Service", m["svc"])
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
    for cm in objects_of(objs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            if SECRET_VARS.search(key) and not key.endswith("_FILE"):
                assert value == "", f"ConfigMap {cm['metadata']['name']} sets secret {key}"
    example = _secret_examples()
    for workload in workloads_of(objs):
        app = app_of(workload)
        pod = workload["spec"]["template"]["spec"]
        refs = [
            (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
            for c in containers(workload)
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
