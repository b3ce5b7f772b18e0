"""`rag whoami`: what an API key may do on a gateway (its role and abilities), from GET /api/whoami.

The key comes from `--api-key` or `DDNRAG_API_KEY`; the gateway from `--gateway` or the local
stack's URL. Without keys configured on the gateway, it answers "open": every caller is admin.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request

from .common import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, console, err_console, stack_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("whoami", help="what an API key may do on the gateway (role: reader, writer or admin)")
    p.add_argument("--gateway", help="gateway URL (default: the local stack's, e.g. http://127.0.0.1:8080)")
    p.add_argument("--api-key", help="the Bearer key (default: the DDNRAG_API_KEY variable)")
    p.add_argument("--json", action="store_true", help="print the gateway's JSON answer")
    p.add_argument("--data-dir", help="the local stack's data directory (default ./data, or DDNRAG_DATA_DIR)")
    p.set_defaults(func=cmd_whoami)


def cmd_whoami(args: argparse.Namespace) -> int:
    url = (args.gateway or stack_config(args).gateway_url).rstrip("/") + "/api/whoami"
    key = args.api_key or os.environ.get("DDNRAG_API_KEY", "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            me = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = err.reason
        err_console.print(f"[red]error:[/red] {url}: {err.code} {message}")
        return EXIT_FAILED
    except (urllib.error.URLError, OSError) as err:
        err_console.print(f"[red]error:[/red] the gateway at {url} is not reachable ({err}); is the stack running?")
        return EXIT_UNAVAILABLE
    if args.json:
        console.print_json(data=me)
        return EXIT_OK
    can = ", ".join(k for k, v in me["can"].items() if v)
    who = "no API keys on this gateway: every caller" if me["auth"] == "open" else f"key {me['key_id']}…"
    console.print(f"{who} is [bold]{me['role']}[/bold]; may: {can}")
    return EXIT_OK
