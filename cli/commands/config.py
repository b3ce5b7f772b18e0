"""`rag config backends list|add|test|remove`: the storage service's object-store backends.

Secrets are never flags (they would show in `ps` and shell history) and never printed. `add`
takes credentials, in this order, from: `--credentials-env-prefix` or `--credentials-file` (the
storage service reads them itself), `--no-credentials`, the variables `DDNRAG_CLI_ACCESS_KEY_ID` /
`DDNRAG_CLI_SECRET_ACCESS_KEY` (or the ones `--secret-env` names), or a prompt on a terminal (the
secret with getpass, not echoed).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from rich.markup import escape
from rich.table import Table

from ddnrag.storage.v1 import storage_service_pb2 as spb
from kernel.ids import NAME_PATTERN

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_common,
    console,
    emit_json,
    ms,
    rag_client,
    report,
    run,
    to_dict,
)

KINDS = {
    "ddn-infinia": spb.BACKEND_KIND_DDN_INFINIA,
    "aws-s3": spb.BACKEND_KIND_AWS_S3,
    "s3-compatible": spb.BACKEND_KIND_S3_COMPATIBLE,
}
ADDRESSING = {"path": spb.ADDRESSING_STYLE_PATH, "virtual": spb.ADDRESSING_STYLE_VIRTUAL}
KEY_ID_ENV = "DDNRAG_CLI_ACCESS_KEY_ID"
SECRET_ENV = "DDNRAG_CLI_SECRET_ACCESS_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="configure the platform (storage backends)")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="AREA")
    b = csub.add_parser("backends", help="list, add, test or remove object-store backends")
    bsub = b.add_subparsers(dest="backends_command", required=True, metavar="ACTION")

    q = bsub.add_parser("list", help="list the configured backends (secrets are never shown)")
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_list)

    q = bsub.add_parser("add", help="add a backend, or replace the one with the same name")
    q.add_argument("name", help=f"backend name, {NAME_PATTERN}")
    q.add_argument("--kind", choices=list(KINDS), required=True, help="the kind of store")
    q.add_argument("--bucket", required=True, help="bucket name")
    q.add_argument("--endpoint", default="", help="endpoint URL (empty for AWS S3's default)")
    q.add_argument("--region", default="", help="region, for example us-east-1")
    q.add_argument("--addressing", choices=list(ADDRESSING), help="S3 addressing style (default: by kind)")
    q.add_argument("--insecure-skip-verify", action="store_true", help="do NOT verify TLS certificates")
    q.add_argument("--ca-bundle", default="", help="CA bundle path (as the storage service sees it)")
    q.add_argument("--allowed-prefix", action="append", default=[], help="key prefix this backend may touch")
    creds = q.add_mutually_exclusive_group()
    creds.add_argument(
        "--credentials-env-prefix",
        metavar="PREFIX",
        help="the storage service reads <PREFIX>_ACCESS_KEY_ID and <PREFIX>_SECRET_ACCESS_KEY from its environment",
    )
    creds.add_argument(
        "--credentials-file", metavar="PATH", help="a file or Secret directory the storage service reads"
    )
    creds.add_argument("--no-credentials", action="store_true", help="anonymous (or AWS's default chain)")
    q.add_argument(
        "--secret-env",
        metavar="VAR",
        default=SECRET_ENV,
        help=f"variable holding the secret access key (default {SECRET_ENV}); prompted when unset on a terminal",
    )
    q.add_argument("--rtt-ms", type=float, default=0.0, help="emulation: added round-trip time in ms")
    q.add_argument("--jitter-ms", type=float, default=0.0, help="emulation: added random jitter in ms")
    q.add_argument("--bandwidth-mbps", type=float, default=0.0, help="emulation: bandwidth cap in Mbit/s")
    q.add_argument("--test", action="store_true", help="test the connection right after adding")
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_add)

    q = bsub.add_parser("test", help="check a backend: HeadBucket latency, write and read permission")
    q.add_argument("name", nargs="?", default="", help="backend name (default: the default backend)")
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_test)

    q = bsub.add_parser("remove", help="remove a backend")
    q.add_argument("name")
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_remove)


def backend_dict(b: spb.Backend) -> dict[str, Any]:
    """A backend for output: write-only secret fields are left out entirely."""
    d = to_dict(b)
    d.pop("secret_access_key", None)
    d.pop("access_key_id", None)
    return d


def _kind_name(kind: int) -> str:
    return next((k for k, v in KINDS.items() if v == kind), "unspecified")


def cmd_list(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            resp = await rag.storage.list_backends()
        if args.json:
            emit_json({"default_backend": resp.default_backend, "backends": [backend_dict(b) for b in resp.backends]})
            return EXIT_OK
        t = Table(title="storage backends", title_justify="left")
        for col in ("name", "kind", "endpoint", "bucket", "region", "credentials", "notes"):
            t.add_column(col)
        for b in resp.backends:
            notes = []
            if b.is_default or b.name == resp.default_backend:
                notes.append("default")
            if b.emulated:
                s = b.shaping
                cap = f"{s.bandwidth_mbps:g} Mbit/s" if s.bandwidth_mbps else "uncapped"
                notes.append(escape(b.label) or f"emulated: RTT {s.rtt_ms:g} ms, jitter {s.jitter_ms:g} ms, {cap}")
            if b.insecure_skip_verify:
                notes.append("[yellow]TLS not verified[/yellow]")
            t.add_row(
                escape(b.name),
                _kind_name(b.kind),
                escape(b.endpoint or "(AWS default)"),
                escape(b.bucket),
                escape(b.region or "-"),
                "set" if b.has_credentials else "none",
                ", ".join(notes),
            )
        console.print(t)
        return EXIT_OK

    return run(args, work)


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    """(access key id, secret) for inline credentials, from the environment or a prompt."""
    key_id = os.environ.get(KEY_ID_ENV, "")
    secret = os.environ.get(args.secret_env, "")
    interactive = sys.stdin.isatty()
    if not key_id and interactive:
        key_id = input("access key id: ").strip()
    if not secret and interactive and key_id:
        secret = getpass.getpass("secret access key (not shown): ").strip()
    if not key_id or not secret:
        raise UsageError(
            f"no credentials: set {KEY_ID_ENV} and {args.secret_env}, run on a terminal to be prompted, or pass "
            "--credentials-env-prefix, --credentials-file or --no-credentials"
        )
    return key_id, secret


def build_backend(args: argparse.Namespace) -> spb.Backend:
    """The Backend message for `add`; prompts for credentials (before any call is made)."""
    backend = spb.Backend(
        name=args.name,
        kind=KINDS[args.kind],
        endpoint=args.endpoint,
        region=args.region,
        bucket=args.bucket,
        addressing_style=ADDRESSING.get(args.addressing or "", spb.ADDRESSING_STYLE_UNSPECIFIED),
        insecure_skip_verify=args.insecure_skip_verify,
        ca_bundle_path=args.ca_bundle,
        allowed_prefixes=args.allowed_prefix,
    )
    if args.credentials_env_prefix:
        backend.credentials_env_prefix = args.credentials_env_prefix
    elif args.credentials_file:
        backend.credentials_file = args.credentials_file
    elif not args.no_credentials:
        backend.access_key_id, backend.secret_access_key = _credentials(args)
    if args.rtt_ms or args.jitter_ms or args.bandwidth_mbps:
        backend.shaping.CopyFrom(
            spb.Shaping(rtt_ms=args.rtt_ms, jitter_ms=args.jitter_ms, bandwidth_mbps=args.bandwidth_mbps)
        )
    return backend


def cmd_add(args: argparse.Namespace) -> int:
    try:
        backend = build_backend(args)
    except (UsageError, EOFError) as err:
        return report(args, err if isinstance(err, UsageError) else UsageError("no credentials given"))

    async def work() -> int:
        async with rag_client(args) as rag:
            saved = (await rag.storage.put_backend(backend)).backend
            test = await rag.storage.test_connection(saved.name) if args.test else None
        if args.json:
            emit_json({"backend": backend_dict(saved), "test": _test_dict(test) if test else None})
        else:
            creds = "credentials set" if saved.has_credentials else "no credentials"
            emu = " (emulated)" if saved.emulated else ""
            console.print(
                f"backend [bold]{escape(saved.name)}[/bold]{emu} saved: {_kind_name(saved.kind)} "
                f"{escape(saved.endpoint or 'AWS default endpoint')}, bucket {escape(saved.bucket)}, {creds}"
            )
            if test:
                _show_test(saved.name, test)
        return EXIT_FAILED if test is not None and not test.ok else EXIT_OK

    return run(args, work)


def _test_dict(t: spb.TestConnectionResponse) -> dict[str, Any]:
    d = to_dict(t)
    d["head_bucket_ms"] = round(t.head_bucket_ns / 1e6, 3)
    return d


def _show_test(name: str, t: spb.TestConnectionResponse) -> None:
    def mark(ok: bool) -> str:
        return "[green]yes[/green]" if ok else "[red]no[/red]"

    verdict = "[bold green]ok[/bold green]" if t.ok else "[bold red]failed[/bold red]"
    console.print(
        f"{escape(name or 'default backend')}: {verdict} · HeadBucket {ms(t.head_bucket_ns)} · "
        f"write {mark(t.can_write)} · read {mark(t.can_read)}"
    )
    if t.message:
        console.print(f"  {escape(t.message)}")


def cmd_test(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            t = await rag.storage.test_connection(args.name)
        if args.json:
            emit_json({"backend": args.name, **_test_dict(t)})
        else:
            _show_test(args.name, t)
        return EXIT_OK if t.ok else EXIT_FAILED

    return run(args, work)


def cmd_remove(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            await rag.storage.remove_backend(args.name)
        if args.json:
            emit_json({"removed": args.name})
        else:
            console.print(f"backend {escape(args.name)} removed")
        return EXIT_OK

    return run(args, work)
