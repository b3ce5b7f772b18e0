"""Prompt-injection passages are recognised and taken out of what generators read; ordinary text
that uses the same words is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.llm_gateway.guards.injection import is_instruction, split_instructions
from tests.support.injection_corpus import BENIGN, HOSTS, INJECTIONS, planted

ROOT = Path(__file__).resolve().parents[2]


def test_the_corpus_has_at_least_50_injections() -> None:
    assert len(set(INJECTIONS)) >= 50


@pytest.mark.parametrize("i", range(len(INJECTIONS)))
def test_each_planted_injection_is_taken_out_and_the_facts_stay(i: int) -> None:
    clean, quoted = split_instructions(planted(i))
    assert quoted, INJECTIONS[i]
    assert not is_instruction(clean), clean
    host = HOSTS[i % len(HOSTS)]
    assert host in clean or host.rstrip(".") in " ".join(quoted) or not clean


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_is_not_an_instruction(text: str) -> None:
    assert not is_instruction(text)


def test_the_sample_corpus_has_no_false_alarm() -> None:
    files = [p for p in (ROOT / "sample_corpus").rglob("*") if p.suffix in (".md", ".txt")]
    assert files
    for p in files:
        _, quoted = split_instructions(p.read_text(errors="replace"))
        assert not quoted, (p.name, quoted)


@pytest.mark.parametrize("name", ["scifact", "nfcorpus"])
def test_no_false_alarm_on_beir_abstracts(name: str) -> None:
    """8,816 scientific abstracts (when the BEIR data is here): none is taken for an injection."""
    import json

    path = ROOT.parent / "shared" / "data" / name / "corpus.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    flagged = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if split_instructions(f"{d.get('title', '')}. {d['text']}")[1]:
            flagged.append(d["_id"])
    assert flagged == []
