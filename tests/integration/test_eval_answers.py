"""`rag eval BEIR_DIR --answers` end to end on a tiny BEIR directory: the retriever's evaluator
ranks, an llm_gateway started in-process answers over real gRPC with the built-in generator, and
the cited documents are scored against the qrels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DOCS = {
    "zephyr": (
        "Project Zephyr",
        "The Zephyr loop keeps every GPU rack below 30 degrees Celsius using a glycol mixture.",
    ),
    "aurora": ("Project Aurora", "Project Aurora is the backup power system with two diesel generators of 2 MW each."),
    "heliotrope": ("Heliotrope", "The Heliotrope mover moves cold training shards to the capacity tier every night."),
    "boreas": ("Boreas", "Boreas is the name of the north wind in Greek mythology and appears in many old poems."),
}
QUERIES = {
    "q1": ("What temperature does the Zephyr loop keep GPU racks below?", "zephyr"),
    "q2": ("What is the backup power system of the data hall?", "aurora"),
}


def test_eval_answers_reports_citation_precision_and_support_recall(tmp_path: Path) -> None:
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in DOCS.items())
    )
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items())
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "eval", str(beir), "--split", "test", "--answers", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)["answers"]
    assert answers["queries"] == 2 and answers["answered"] == 2
    assert answers["support_recall"] == 1.0 and answers["citation_precision"] == 1.0, answers
    assert answers["top_k"] == 5
