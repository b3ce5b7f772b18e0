"""`rag ab --backends A,B --questions FILE|BEIR_DIR [--split test] [--n 300] [--repeat R]`: an A/B
run of two storage backends over real questions, run by the llm_gateway (AbTestService).

Each question is searched once; the same chunk ids are fetched from A and from B, interleaved
A,B then B,A; the first pass is cold, later passes warm. The run is saved in the object store
(`bench/ab/<run_id>.json` and `.csv`); `--html`/`--csv` also write the report and the samples
here. `rag ab --list` lists saved runs; `rag ab --show RUN` prints one (and exports it with
`--html`/`--csv`); `rag ab --follow RUN` follows a run that is still going; `rag ab --cmp RUN_A RUN_B`
compares two saved runs phase by phase.

Questions: a BEIR directory (queries.jsonl and qrels/<split>.tsv: the split's queries, in qrels
order), a .jsonl file (objects with "text" or "question", or plain strings), a .json list, or a
text file with one question per line (blank lines and lines starting with # are skipped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clients.llm import AbTestClient
from ddnrag.llm.v1 import ab_service_pb2 as ab_pb

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_common,
    console,
    emit_json,
    err_console,
    ms,
    resolve_addr,
    run,
    split_csv,
)

STAGES = (("fetch_ttfb", "fetch TTFB"), ("fetch_total", "fetch total"), ("ttft", "TTFT"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ab", help="A/B of two storage backends over real questions (the same chunks on both)")
    p.add_argument("--backends", help="the two backends, A,B (see `rag config backends`)")
    p.add_argument("--questions", help="a question file (.txt, .jsonl, .json) or a BEIR directory")
    p.add_argument("--split", default="test", help="the BEIR split whose queries to ask (default test)")
    p.add_argument("--n", type=int, default=300, help="ask the first N questions (default 300)")
    p.add_argument("--repeat", type=int, default=2, help="passes over the questions; the first is cold (default 2)")
    p.add_argument("--collection", default="default", help="the collection searched (default: default)")
    p.add_argument("--top-k", type=int, default=5, help="chunks per question (default 5)")
    p.add_argument("--no-ttft", action="store_true", help="do not time the generator's first token")
    p.add_argument("--label", default="", help="a label saved with the run")
    p.add_argument("--list", action="store_true", help="list saved A/B runs, newest first")
    p.add_argument("--show", metavar="RUN", help="print a saved run")
    p.add_argument("--follow", metavar="RUN", help="follow a run that is still going (from its first event)")
    p.add_argument("--cmp", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two saved runs, phase by phase")
    p.add_argument("--html", metavar="FILE", help="also write the run's self-contained HTML report here")
    p.add_argument("--csv", metavar="FILE", help="also write the run's samples (CSV) here")
    add_common(p, services=("llm_gateway",))
    p.set_defaults(func=cmd_ab)


def load_questions(source: str, split: str = "test", n: int = 300) -> tuple[list[str], str]:
    """The first `n` questions of `source` and a description of where they came from."""
    if n <= 0:
        raise UsageError(f"--n must be 1 or more, got {n}")
    path = Path(source)
    if path.is_dir():
        qrels, queries = path / "qrels" / f"{split}.tsv", path / "queries.jsonl"
        if not qrels.is_file() or not queries.is_file():
            raise UsageError(
                f"{path} is not a BEIR directory with a {split!r} split (queries.jsonl, qrels/{split}.tsv)"
            )
        ids: list[str] = []
        for line in qrels.read_text(encoding="utf-8").splitlines()[1:]:
            qid = line.split("\t", 1)[0].strip()
            if qid and qid not in ids:
                ids.append(qid)
        texts = {}
        for line in queries.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                texts[str(d["_id"])] = d.get("text", "")
        out = [texts[i] for i in ids if texts.get(i, "").strip()]
        where = f"{path.name} {split} split"
    elif path.is_file():
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            out = [_text(x) for x in json.loads(raw)]
        elif path.suffix == ".jsonl":
            out = [_text(json.loads(line)) for line in raw.splitlines() if line.strip()]
        else:
            out = [line.strip() for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        out = [q for q in out if q.strip()]
        where = path.name
    else:
        raise UsageError(f"{source} is neither a question file nor a BEIR directory")
    if not out:
        raise UsageError(f"{source} holds no questions")
    return out[:n], f"{where}, first {min(n, len(out))} of {len(out)}"


def _text(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("text") or x.get("question") or "")
    raise UsageError("each question must be a string or an object with a 'text' or 'question' field")


def cmd_ab(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with AbTestClient(resolve_addr("llm_gateway", args), timeout_s=args.timeout) as client:
            if args.list:
                return await _list(args, client)
            if args.show:
                got = await client.get(args.show, include_csv=bool(args.csv), include_html=bool(args.html))
                _export(args, got.html, got.csv)
                return _print_run(args, json.loads(got.run.document_json))
            if args.cmp:
                return await _compare(args, client)
            if args.follow:
                return await _stream(args, client, client.watch(args.follow))
            return await _stream(args, client, client.run(_request(args)))

    return run(args, work)


def _request(args: argparse.Namespace) -> ab_pb.RunAbTestRequest:
    backends = split_csv(args.backends)
    if len(backends) != 2:
        raise UsageError("give two backends: --backends A,B")
    if not args.questions:
        raise UsageError("give --questions FILE or a BEIR directory")
    if args.repeat <= 0:
        raise UsageError(f"--repeat must be 1 or more, got {args.repeat}")
    questions, source = load_questions(args.questions, args.split, args.n)
    return ab_pb.RunAbTestRequest(
        backends=backends,
        questions=questions,
        collection=args.collection,
        top_k=args.top_k,
        repeat=args.repeat,
        skip_ttft=args.no_ttft,
        label=args.label,
        source=source,
    )


async def _stream(args: argparse.Namespace, client: AbTestClient, events: Any) -> int:
    doc: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=args.json,
    ) as bar:
        task = bar.add_task("A/B", total=None)
        async for ev in events:
            kind = ev.WhichOneof("event")
            if kind == "notice":
                bar.console.print(escape(ev.notice.message))
            elif kind == "progress":
                bar.update(
                    task, total=ev.progress.total, completed=ev.progress.done, description=f"A/B {ev.progress.phase}"
                )
            elif kind == "run":
                doc = json.loads(ev.run.document_json)
    if not doc:
        raise UsageError("the run's stream ended without its result; follow it with `rag ab --follow RUN`")
    if args.html or args.csv:
        got = await client.get(doc["run_id"], include_csv=bool(args.csv), include_html=bool(args.html))
        _export(args, got.html, got.csv)
    return _print_run(args, doc)


def _export(args: argparse.Namespace, html: str, csv_text: str) -> None:
    if args.html:
        Path(args.html).write_text(html, encoding="utf-8")
    if args.csv:
        Path(args.csv).write_text(csv_text, encoding="utf-8")


def _name(doc: dict[str, Any], n: str) -> str:
    b = next((b for b in doc.get("backends", []) if b["name"] == n), {})
    return f"{n} (emulated)" if b.get("emulated") else n


def _print_run(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if args.json:  # the run without its samples; the questions as their count
        req = dict(doc["request"])
        if "questions" in req:
            req["questions_count"] = len(req.pop("questions"))
        emit_json({**{k: v for k, v in doc.items() if k != "samples"}, "request": req})
        return EXIT_OK if doc.get("status") == "complete" else EXIT_FAILED
    a, b = doc["request"]["backends"]
    console.print(
        f"A/B run [bold]{doc['run_id']}[/bold] ({doc.get('status')}): A = {escape(_name(doc, a))}, B = {escape(_name(doc, b))}"
    )
    for note in doc.get("notes", []):
        console.print(f"note: {escape(note)}")
    for phase, summ in doc.get("summary", {}).items():
        t = Table(title=f"{phase} ({summ['pairs']} paired questions)")
        for col in ("backend", "stage", "p50", "p90", "p99", "errors"):
            t.add_column(col, justify="left" if col in ("backend", "stage") else "right")
        for n in (a, b):
            bs = summ["backends"][n]
            kinds = ", ".join(f"{k} {v}" for k, v in bs["errors_by_kind"].items())
            for key, label in STAGES:
                d = bs[key]
                if d["n"]:
                    t.add_row(
                        escape(_name(doc, n)),
                        label,
                        ms(d["p50_ns"]),
                        ms(d["p90_ns"]),
                        ms(d["p99_ns"]),
                        f"{bs['errors']} {kinds}".strip(),
                    )
        r = summ["retrieval"]
        t.add_row("both", "retrieval total", ms(r["p50_ns"]), ms(r["p90_ns"]), ms(r["p99_ns"]), "")
        console.print(t)
        for key, label in STAGES:
            p = summ["paired"].get(key)
            if p:
                console.print(
                    f"  {label}: B - A mean {ms(p['mean_diff_ns'])} (95% CI {ms(p['ci_low_ns'])} .. {ms(p['ci_high_ns'])}), "
                    f"A won {100 * p['a_win_rate']:.0f}%: {escape(p['verdict'])}"
                )
    console.print(f"saved: {doc.get('json_key') or '(not saved)'} and {doc.get('csv_key') or '-'}")
    return EXIT_OK if doc.get("status") == "complete" else EXIT_FAILED


async def _compare(args: argparse.Namespace, client: AbTestClient) -> int:
    """Per phase, backend and stage: p50 in each run and B/A, and each run's fetch TTFB verdict."""
    docs = [json.loads((await client.get(r)).run.document_json) for r in args.cmp]
    rows = []
    for phase in ("cold", "warm"):
        sides = [d.get("summary", {}).get(phase) for d in docs]
        names = sorted({n for s in sides if s for n in s["backends"]})
        for n in names:
            for key, label in STAGES:
                p50 = [s["backends"][n][key]["p50_ns"] if s and n in s["backends"] else 0 for s in sides]
                if any(p50):
                    ratio = round(p50[1] / p50[0], 3) if all(p50) else None
                    rows.append(
                        {
                            "phase": phase,
                            "backend": n,
                            "stage": label,
                            "a_p50_ns": p50[0],
                            "b_p50_ns": p50[1],
                            "b_over_a": ratio,
                        }
                    )
    verdicts = [
        {
            p: d.get("summary", {}).get(p, {}).get("paired", {}).get("fetch_ttfb", {}).get("verdict", "")
            for p in ("cold", "warm")
        }
        for d in docs
    ]
    if args.json:
        emit_json({"a": args.cmp[0], "b": args.cmp[1], "rows": rows, "verdicts": verdicts})
        return EXIT_OK
    t = Table(title=f"{args.cmp[0]} -> {args.cmp[1]}")
    for col in ("phase", "backend", "stage", "p50 A", "p50 B", "B/A"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["phase"],
            escape(r["backend"]),
            r["stage"],
            ms(r["a_p50_ns"]),
            ms(r["b_p50_ns"]),
            str(r["b_over_a"] or "-"),
        )
    console.print(t)
    for run_id, v in zip(args.cmp, verdicts, strict=True):
        console.print(f"{run_id}: cold {escape(v['cold'] or '-')}; warm {escape(v['warm'] or '-')}")
    return EXIT_OK


async def _list(args: argparse.Namespace, client: AbTestClient) -> int:
    resp = await client.list(20)
    docs = [json.loads(r.document_json) for r in resp.runs]
    if args.json:
        emit_json({"runs": docs})
        return EXIT_OK
    t = Table(title="A/B runs")
    for col in ("run", "status", "A", "B", "questions", "cold fetch TTFB verdict"):
        t.add_column(col)
    for d in docs:
        a, b = d["request"]["backends"]
        v = d.get("summary", {}).get("cold", {}).get("paired", {}).get("fetch_ttfb", {}).get("verdict", "")
        t.add_row(
            d["run_id"],
            d.get("status", ""),
            escape(_name(d, a)),
            escape(_name(d, b)),
            str(d["request"].get("questions_count", "")),
            escape(v),
        )
    console.print(t)
    return EXIT_OK
