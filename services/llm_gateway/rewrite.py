"""History for follow-up questions: trimming it to a token budget, and the standalone question
retrieval searches.

- `trim_history` keeps the newest turns that fit the budget and says how many oldest ones it left
  out.
- `rules_rewrite` is the built-in generator's deterministic rewriter: a follow-up that lacks a
  subject ("And how does it compare with throughput?") gets the subject of the previous turns
  ("How does time to first byte compare with throughput?"). A question that names its own
  subject is left as it is.
- `rewrite_messages` is the prompt an LLM backend gets to do the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .tokens import TokenCounter


@dataclass(frozen=True)
class HistoryTurn:
    """One earlier question and its answer. `search_query` is the standalone question that was
    searched for it (empty when unknown, e.g. history given as plain messages)."""

    question: str
    answer: str
    search_query: str = ""

    @property
    def standalone(self) -> str:
        return self.search_query or self.question


@dataclass(frozen=True)
class Trimmed:
    turns: tuple[HistoryTurn, ...]
    dropped: int
    tokens: int


def turns_from_messages(messages: Sequence[tuple[str, str]]) -> list[HistoryTurn]:
    """(role, content) pairs, oldest first -> turns. A user message opens a turn, the assistant
    messages after it answer it; system messages and an assistant message with no question are
    skipped."""
    turns: list[HistoryTurn] = []
    question: str | None = None
    answer: list[str] = []
    for role, content in messages:
        if role == "user":
            if question is not None:
                turns.append(HistoryTurn(question, " ".join(answer)))
            question, answer = content, []
        elif role == "assistant" and question is not None:
            answer.append(content)
    if question is not None:
        turns.append(HistoryTurn(question, " ".join(answer)))
    return turns


def trim_history(turns: Sequence[HistoryTurn], counter: TokenCounter, budget_tokens: int) -> Trimmed:
    """The newest turns whose questions and answers fit in `budget_tokens`, oldest first."""
    kept: list[HistoryTurn] = []
    used = 0
    for t in reversed(turns):
        n = counter.count(t.question) + counter.count(t.answer) + 8  # role markers of two messages
        if used + n > budget_tokens:
            break
        kept.append(t)
        used += n
    kept.reverse()
    return Trimmed(tuple(kept), len(turns) - len(kept), used)


# ---- the deterministic rewriter -----------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
# Words that never start or end a subject phrase (question words, auxiliaries, pronouns, glue).
_GLUE = frozenset(
    """a an the and or but if of to in on at by for with from into over as is are was were be been being
    it its this that these those there here what which who whom whose when where why how do does did
    can could should would will shall may might must have has had i you he she we they me my your our
    their his her them not no than then so such about up out only also any all each some more most
    other tell explain describe mean means matter matters work works measure measures compare
    compared use used affect affects differ differs vs versus please give show""".split()
)
# Words inside a phrase that may join two content words ("time to first byte").
_JOINERS = frozenset({"to", "of", "for", "in", "on", "per", "and"})
# Anaphora that stand for the previous subject.
_PRONOUNS = ("it", "its", "they", "them", "their", "this", "that", "these", "those", "he", "she")
_CONJUNCTION = re.compile(r"^(?:and|but|also|so|then|ok(?:ay)?)\b[\s,]*", re.IGNORECASE)
_ABOUT = re.compile(r"^(?:what|how)\s+about\b", re.IGNORECASE)


def subject_phrases(question: str) -> list[str]:
    """Candidate subjects of a question: maximal runs of content words, joined by a few small
    words ("time to first byte"), in order of appearance."""
    words = _WORD.findall(question)
    phrases: list[str] = []
    run: list[str] = []
    for i, w in enumerate(words):
        lw = w.lower()
        if lw not in _GLUE:
            run.append(w)
            continue
        nxt = words[i + 1].lower() if i + 1 < len(words) else ""
        if run and lw in _JOINERS and nxt and nxt not in _GLUE:
            run.append(w)
            continue
        if run:
            phrases.append(" ".join(run))
        run = []
    if run:
        phrases.append(" ".join(run))
    return phrases


def subject_of(turn: HistoryTurn) -> str:
    """The subject of an earlier turn: of its candidate phrases, the one whose longest leading
    part its answer repeats ("time to first byte measure" -> "time to first byte"), preferring more
    words, then more repeats, then the earlier phrase; with no repeats, its first phrase."""
    phrases = subject_phrases(turn.standalone)
    if not phrases:
        return ""
    answer = " ".join(_WORD.findall(turn.answer.lower()))
    best, best_key = phrases[0], (0, 0)
    for p in phrases:
        words = p.split()
        for n in range(len(words), 0, -1):
            cand = " ".join(words[:n]).lower()
            hits = len(re.findall(r"\b" + re.escape(cand) + r"\b", answer))
            if hits:
                if (n, hits) > best_key:
                    best, best_key = " ".join(words[:n]), (n, hits)
                break
    return best


def has_anaphora(question: str) -> bool:
    words = [w.lower() for w in _WORD.findall(question)]
    return any(w in _PRONOUNS for w in words)


def rules_rewrite(question: str, history: Sequence[HistoryTurn]) -> str:
    """The standalone question for `question` after `history` (see the module docstring)."""
    q = " ".join(question.split())
    if not history:
        return q
    subject = ""
    for t in reversed(history):  # the newest turn that has a subject
        subject = subject_of(t)
        if subject:
            break
    if not subject or subject.lower() in q.lower():
        return q
    rest = _CONJUNCTION.sub("", q)
    if has_anaphora(rest):
        out = _replace_first_pronoun(rest, subject)
    elif rest != q or _ABOUT.match(rest):
        # "And the cost?", "What about throughput?": the follow-up names only its new topic.
        body = rest.rstrip(" ?.!")
        out = f"{body} in relation to {subject}?" if body else f"{subject}?"
    else:
        return q  # it names its own subject
    return out[:1].upper() + out[1:]


def _replace_first_pronoun(text: str, subject: str) -> str:
    def sub(m: re.Match[str]) -> str:
        w = m.group(0).lower()
        if w in ("its", "their"):
            return f"{subject}'s"
        return subject

    pattern = re.compile(r"\b(?:" + "|".join(_PRONOUNS) + r")\b", re.IGNORECASE)
    return pattern.sub(sub, text, count=1)


# ---- the LLM rewrite prompt ---------------------------------------------------------------------
REWRITE_SYSTEM = (
    "You rewrite the user's last question so that it can be understood without the conversation: "
    "replace pronouns and references such as 'it' or 'that' with what they refer to, and keep "
    "everything else. Reply with the rewritten question only, on one line, without quotes. If the "
    "question already stands alone, reply with it unchanged."
)


def rewrite_messages(question: str, history: Sequence[HistoryTurn]) -> tuple[dict[str, str], ...]:
    lines = []
    for t in history:
        lines.append(f"User: {t.question.strip()}")
        lines.append(f"Assistant: {t.answer.strip()}")
    convo = "\n".join(lines)
    user = f"Conversation so far:\n{convo}\n\nLast question: {question.strip()}\n\nStandalone question:"
    return ({"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user})


def clean_rewrite(text: str, fallback: str) -> str:
    """The first non-empty line of an LLM's rewrite, unquoted; `fallback` when it is unusable."""
    for line in text.strip().splitlines():
        line = re.sub(r"^(?:standalone question|rewritten question)\s*:\s*", "", line.strip(), flags=re.IGNORECASE)
        line = line.strip("\"'` ").strip()
        if line:
            return line[:4096]
    return fallback
