"""Builds the service images from docker/Dockerfile with buildah (no daemon), and records them.

    python docker/images.py build [TARGET ...]   build (default: the five CPU targets), one at a time
    python docker/images.py sbom  [TARGET ...]   a CycloneDX SBOM per image (Python and Debian packages)
    python docker/images.py push REGISTRY        push every built image, write the pushed digests

`make images`, `make images-sbom` and `make images-push` call these. The build is the one
`docker build` runs (docker/Dockerfile is unchanged); what differs is only what this machine needs:

- the base (`--base`, default: a Debian bookworm base made here with mmdebstrap: python3 is 3.11,
  no compilers, no apt; made once and reused while its recipe is unchanged),
- the CA bundle (`--ca-bundle`), mounted over the image's system bundle for the build steps only,
  so pip reaches PyPI through a TLS-inspecting proxy; it never enters a layer,
- a local wheel directory (`--wheels`), mounted at /wheels for the build steps only: the CPU torch
  wheel is taken from there instead of PyTorch's index,
- explicit rlimits, and chroot isolation (this machine refuses raising rlimits and has no
  container runtime that starts).

Layers are cached (`--layers`): a rebuild after a code change reruns only the code layers.
Image names and tags come from one place, the `images:` list of k8s/base/kustomization.yaml
(name == Dockerfile target). Each build writes build/images/images.json: per image its name,
tag, image id, manifest digest, size and build time; `push` adds the registry digests, the ones a
kustomize `images:` entry pins (`digest: sha256:...`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
KUSTOMIZATION = ROOT / "k8s" / "base" / "kustomization.yaml"
OUT = ROOT / "build" / "images"
RECORD = OUT / "images.json"
CPU_TARGETS = ("storage", "gateway", "llm-gateway", "retriever", "embedder-cpu")
GPU_TARGETS = ("embedder-cuda",)
UID = 10001
# buildah's defaults ask for more than this machine allows; these are within its hard limits.
ULIMITS = ("--ulimit", "nproc=32768:32768", "--ulimit", "nofile=20000:20000")

# The local base: Debian bookworm (python3 3.11) from Debian's own packages, essential variant
# (no apt, no perl) plus what the Dockerfile needs: python and venv, useradd, the CA store.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "libstdc++6", "passwd", "ca-certificates")
BASE_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*")
BASE_NAME = "localhost/ddnrag-base"


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, text=True, **kw)


def capture(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, text=True, capture_output=True).stdout.strip()


def image_exists(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True).returncode == 0


# ----------------------------------------------------------------------------- names and tags


def kustomize_images(path: Path = KUSTOMIZATION) -> dict[str, str]:
    """Dockerfile target -> `ddnrag/<target>:<tag>`, from the kustomization's `images:` list."""
    doc = yaml.safe_load(path.read_text())
    out = {}
    for entry in doc.get("images", []):
        name = entry["name"]
        out[name.split("/", 1)[1]] = f"{name}:{entry['newTag']}"
    return out


# ----------------------------------------------------------------------------- base


def base_recipe() -> dict[str, object]:
    return {"suite": BASE_SUITE, "packages": BASE_PACKAGES, "mirrors": BASE_MIRRORS, "excludes": BASE_EXCLUDES}


def local_base() -> str:
    """The mmdebstrap base, made once per recipe (its tag is the recipe's hash) and then reused."""
    digest = hashlib.sha256(json.dumps(base_recipe(), sort_keys=True).encode()).hexdigest()[:12]
    ref = f"{BASE_NAME}:{BASE_SUITE}-{digest}"
    if image_exists(ref):
        log(f"base {ref} exists, reused")
        return ref
    if not shutil.which("mmdebstrap"):
        raise SystemExit("mmdebstrap is missing: `make images-deps` installs it (or pass BASE=<image>)")
    OUT.mkdir(parents=True, exist_ok=True)
    tar = OUT / "base.tar"
    cmd = [
        "mmdebstrap",
        "--variant=essential",
        "--include=" + ",".join(BASE_PACKAGES),
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        *[f"--dpkgopt=path-exclude={p}" for p in BASE_EXCLUDES],
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        BASE_SUITE,
        str(tar),
        *BASE_MIRRORS,
    ]
    run(cmd)
    ctr = capture(["buildah", "from", "scratch"])
    try:
        run(["buildah", "add", "--quiet", ctr, str(tar), "/"])
        run(
            [
                "buildah",
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                '["python3"]',
                "--label",
                f"org.opencontainers.image.description=Debian {BASE_SUITE} + python3 (mmdebstrap, docker/images.py)",
                ctr,
            ]
        )
        run(["buildah", "commit", "--quiet", "--rm", ctr, ref])
    except BaseException:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
        raise
    finally:
        tar.unlink(missing_ok=True)
    return ref


# ----------------------------------------------------------------------------- build


def image_facts(ref: str) -> dict[str, object]:
    info = json.loads(capture(["buildah", "inspect", "--type", "image", ref]))
    manifest = json.loads(info["Manifest"])
    config = info["OCIv1"]["config"]
    return {
        "image_id": "sha256:" + info["FromImageID"],
        "digest": info["FromImageDigest"],
        "size_bytes": sum(layer["size"] for layer in manifest["layers"]),
        "layers": len(manifest["layers"]),
        "user": config.get("User", ""),
    }


def build(
    targets: list[str], base: str, ca_bundle: str, wheels: str, *, no_cache: bool = False
) -> dict[str, dict[str, object]]:
    tags = kustomize_images()
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    record.setdefault("images", {})
    record["base"] = base
    for target in targets:
        ref = tags.get(target) or tags["embedder-cpu"].replace("embedder-cpu", target)
        cmd = ["buildah", "bud", "--layers", "--isolation", "chroot", *ULIMITS, "-f", str(DOCKERFILE)]
        cmd += ["--target", target, "--build-arg", f"PYTHON_IMAGE={base}", "-t", ref]
        if ca_bundle:
            cmd += ["-v", f"{Path(ca_bundle).resolve()}:/etc/ssl/certs/ca-certificates.crt:ro"]
        if wheels and Path(wheels).is_dir():
            cmd += ["-v", f"{Path(wheels).resolve()}:/wheels:ro"]
        if no_cache:
            cmd.append("--no-cache")
        t0 = time.monotonic()
        run([*cmd, str(ROOT)], cwd=ROOT)
        facts = image_facts(ref)
        if facts["user"] != f"{UID}:{UID}":
            raise SystemExit(f"{ref} runs as {facts['user']!r}, not {UID}:{UID}")
        record["images"][target] = {"ref": ref, **facts, "build_s": round(time.monotonic() - t0, 1)}
        OUT.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
        log(f"{ref}: {facts['size_bytes'] / 1e6:.0f} MB, {facts['digest']}")
    for target in targets:
        entry = record["images"][target]
        print(f"{entry['ref']:32} {entry['size_bytes'] / 1e6:7.0f} MB  {entry['build_s']:6.0f} s  {entry['digest']}")
    return record["images"]


# ----------------------------------------------------------------------------- SBOM


def dpkg_packages(status: Path) -> list[tuple[str, str, str]]:
    """(package, version, architecture) of every installed Debian package in a dpkg status file."""
    out = []
    for para in status.read_text().split("\n\n") if status.exists() else []:
        fields = dict(re.findall(r"^([\w-]+): (.*)$", para, re.M))
        if fields.get("Status", "").endswith(" installed"):
            out.append((fields["Package"], fields["Version"], fields.get("Architecture", "")))
    return sorted(out)


def sbom_json(root: Path, name: str, version: str) -> tuple[str, int]:
    """A CycloneDX 1.6 SBOM of an image's root file system: the Python distributions in its venv
    (their dist-info metadata) and its Debian packages (dpkg's status file). Nothing is executed."""
    from importlib.metadata import distributions

    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    bom = Bom()
    root_component = Component(name=name, version=version, type=ComponentType.CONTAINER, bom_ref=f"{name}:{version}")
    bom.metadata.component = root_component
    licenses = LicenseFactory()
    site = root / "opt" / "venv" / "lib" / "python3.11" / "site-packages"
    seen = set()
    for dist in distributions(path=[str(site)]):
        dist_name, ver = dist.metadata["Name"], dist.version
        if (dist_name.lower(), ver) in seen:
            continue
        seen.add((dist_name.lower(), ver))
        expr = dist.metadata.get("License-Expression") or dist.metadata.get("License") or ""
        component = Component(
            name=dist_name,
            version=ver,
            type=ComponentType.LIBRARY,
            purl=PackageURL("pypi", name=re.sub(r"[-_.]+", "-", dist_name).lower(), version=ver),
            bom_ref=f"pypi/{dist_name}@{ver}",
        )
        if expr and len(expr) < 100 and "\n" not in expr:
            component.licenses.add(licenses.make_from_string(expr))
        bom.components.add(component)
    for pkg, ver, arch in dpkg_packages(root / "var" / "lib" / "dpkg" / "status"):
        bom.components.add(
            Component(
                name=pkg,
                version=ver,
                type=ComponentType.LIBRARY,
                purl=PackageURL("deb", "debian", pkg, ver, {"arch": arch}),
                bom_ref=f"deb/{pkg}@{ver}",
            )
        )
    # The image holds every package directly (a flat list: no dependency edges between them).
    bom.register_dependency(root_component, list(bom.components))
    return JsonV1Dot6(bom).output_as_string(indent=2), len(bom.components)


def sbom(targets: list[str]) -> None:
    """build/images/sbom/<target>.cdx.json for each built image, read from its mounted files."""
    record = json.loads(RECORD.read_text())["images"]
    out = OUT / "sbom"
    out.mkdir(parents=True, exist_ok=True)
    for target in targets:
        ref = str(record[target]["ref"])
        ctr = capture(["buildah", "from", "--pull-never", ref])
        try:
            root = Path(capture(["buildah", "mount", ctr]))
            text, count = sbom_json(root, f"ddnrag/{target}", ref.rsplit(":", 1)[1])
            dest = out / f"{target}.cdx.json"
            dest.write_text(text)
            log(f"{target}: {count} components -> {dest.relative_to(ROOT)}")
        finally:
            subprocess.run(["buildah", "umount", ctr], capture_output=True)
            subprocess.run(["buildah", "rm", ctr], capture_output=True)


# ----------------------------------------------------------------------------- push


def push(registry: str, targets: list[str]) -> None:
    """Push each built image to REGISTRY/<target>:<tag> and record the digest the registry holds."""
    record = json.loads(RECORD.read_text())
    for target in targets:
        entry = record["images"][target]
        ref = str(entry["ref"])
        dest = f"{registry.rstrip('/')}/{target}:{ref.rsplit(':', 1)[1]}"
        digest_file = OUT / f"{target}.pushed-digest"
        run(["buildah", "push", "--digestfile", str(digest_file), ref, f"docker://{dest}"])
        entry["pushed"] = {"ref": dest, "digest": digest_file.read_text().strip()}
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print("# The overlay's images: entries, pinned by what the registry holds:")
    for target in targets:
        pushed = record["images"][target]["pushed"]
        print(
            f"  - name: ddnrag/{target}\n    newName: {pushed['ref'].rsplit(':', 1)[0]}\n    digest: {pushed['digest']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build images (default: the five CPU targets)")
    b.add_argument("targets", nargs="*", default=list(CPU_TARGETS))
    b.add_argument("--base", default="", help="base image (empty: the local mmdebstrap base)")
    b.add_argument("--ca-bundle", default="/etc/ssl/certs/ca-certificates.crt", help="CA bundle for the build steps")
    b.add_argument("--wheels", default="/opt/wheels", help="local wheel directory with the CPU torch wheel")
    b.add_argument("--no-cache", action="store_true")
    s = sub.add_parser("sbom", help="a CycloneDX SBOM per built image")
    s.add_argument("targets", nargs="*", default=list(CPU_TARGETS))
    p = sub.add_parser("push", help="push the built images to a registry (e.g. OCIR)")
    p.add_argument("registry", help="e.g. iad.ocir.io/<tenancy-namespace>/ddnrag")
    p.add_argument("targets", nargs="*", default=list(CPU_TARGETS))
    args = parser.parse_args(argv)
    if not shutil.which("buildah"):
        raise SystemExit("buildah is missing: `make images-deps` installs it")
    for target in getattr(args, "targets", []):
        if target not in CPU_TARGETS + GPU_TARGETS:
            parser.error(f"unknown target {target!r}")
    if args.cmd == "build":
        os.umask(0o022)
        build(args.targets, args.base or local_base(), args.ca_bundle, args.wheels, no_cache=args.no_cache)
    elif args.cmd == "sbom":
        sbom(args.targets)
    else:
        push(args.registry, args.targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
