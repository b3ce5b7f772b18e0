"""Guards served over HTTP, in the three protocols people run.

- NeMo Guardrails server (`nemoguardrails server`): `POST /v1/chat/completions`
  `{"config_id": c, "messages": [...], "options": {"rails": ["input"] | ["output"],
  "log": {"activated_rails": true}}}` -> `{"messages": [{"role": "assistant", "content": ...}],
  "log": {"activated_rails": [{"type", "name", "stop", ...}]}}`. A rail with `stop: true`
  blocked the message. The server answers an internal failure with HTTP 200 and the content
  "Internal server error.", so that reply counts as the guard being down, not as a verdict.
- A content-safety model behind the OpenAI chat protocol, as NVIDIA NIM serves
  Llama-3.1-NemoGuard-8B-ContentSafety: `POST /v1/chat/completions` with the safety prompt;
  the reply content is JSON `{"User Safety": "safe"|"unsafe", "Response Safety": ...,
  "Safety Categories": "..."}` (Llama Guard's "safe" / "unsafe\\nS1,S2" is read too).
- The OpenAI moderation protocol: `POST /v1/moderations` `{"model": m, "input": text}` ->
  `{"results": [{"flagged": bool, "categories": {name: bool}, ...}]}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kernel.httpjson import HttpJsonError, JsonClient

from .base import GuardDown, Verdict

NEMO_INTERNAL_ERROR = "Internal server error."

SAFETY_PROMPT = """Task: Check if there is unsafe content in the user or agent messages in the below conversation in \
accordance with our safety policy with the below categories. Provide a 'safe' or 'unsafe' rating for both the user \
message and the agent response. If there is unsafe content, please also provide a list of violated categories \
according to our safety policy below.

<BEGIN UNSAFE CONTENT CATEGORIES>
S1: Violence.
S2: Sexual.
S3: Criminal Planning/Confessions.
S4: Guns and Illegal Weapons.
S5: Controlled/Regulated Substances.
S6: Suicide and Self Harm.
S7: Sexual (minor).
S8: Hate/Identity Hate.
S9: PII/Privacy.
S10: Harassment.
S11: Threat.
S12: Profanity.
S13: Needs Caution.
S14: Other.
S15: Manipulation.
S16: Fraud/Deception.
S17: Malware.
S18: High Risk Gov Decision Making.
S19: Political/Misinformation/Conspiracy.
S20: Copyright/Trademark/Plagiarism.
S21: Unauthorized Advice.
S22: Illegal Activity.
S23: Immoral/Unethical.
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

{conversation}

<END CONVERSATION>

Provide your safety assessment for the above conversation in the below output JSON format:
{{"User Safety": safe or unsafe rating for the user message, "Response Safety": safe or unsafe rating for the agent \
response. Omit if no agent response present. "Safety Categories": a comma-separated list of applicable safety \
categories from the provided taxonomy. Omit if all safe.}}

Do not include anything other than the output JSON in your response.
Output JSON: """


class _HttpGuard:
    def __init__(self, name: str, base_url: str, *, api_key: str, stages: tuple[str, ...], timeout_s: float) -> None:
        self.name = name
        self.stages = stages
        self.timeout_s = timeout_s
        self._client = JsonClient(base_url.removesuffix("/v1").rstrip("/"), api_key=api_key)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return await self._client.post(path, body, timeout_s=self.timeout_s)
        except HttpJsonError as err:
            raise GuardDown(f"guard {self.name}: {err}") from None

    def _malformed(self, what: str) -> GuardDown:
        return GuardDown(f"guard {self.name} sent a malformed reply: {what}")

    async def close(self) -> None:
        await self._client.close()


class NemoGuard(_HttpGuard):
    def __init__(self, name: str, base_url: str, *, config_id: str, **kw: Any) -> None:
        super().__init__(name, base_url, **kw)
        self.config_id = config_id

    async def check(self, stage: str, question: str, answer: str) -> Verdict:
        messages = [{"role": "user", "content": question}]
        if stage == "output":
            messages.append({"role": "assistant", "content": answer})
        body = {
            "config_id": self.config_id,
            "messages": messages,
            "options": {"rails": [stage], "log": {"activated_rails": True}},
        }
        reply = await self._post("/v1/chat/completions", body)
        if not isinstance(reply, dict) or not isinstance(reply.get("messages"), list) or not reply["messages"]:
            raise self._malformed("expected an object with a non-empty 'messages' list")
        content = reply["messages"][0].get("content") if isinstance(reply["messages"][0], dict) else None
        if content == NEMO_INTERNAL_ERROR:
            raise GuardDown(f"guard {self.name}: the NeMo Guardrails server reported an internal error")
        log = reply.get("log") or {}
        rails = log.get("activated_rails") if isinstance(log, dict) else None
        if not isinstance(rails, list):
            raise self._malformed("no log.activated_rails (is the server older than 0.8?)")
        stopped = [r.get("name", "?") for r in rails if isinstance(r, dict) and r.get("stop")]
        if stopped:
            msg = content if isinstance(content, str) and content else "blocked"
            return Verdict(self.name, stage, "refused", "GUARDRAIL_BLOCKED", f"{', '.join(stopped)}: {msg}")
        return Verdict(self.name, stage, "allowed")


class ContentSafetyGuard(_HttpGuard):
    def __init__(self, name: str, base_url: str, *, model: str, **kw: Any) -> None:
        super().__init__(name, base_url, **kw)
        self.model = model

    async def check(self, stage: str, question: str, answer: str) -> Verdict:
        conv = f"user: {question}"
        if stage == "output":
            conv += f"\n\nresponse: agent: {answer}"
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": SAFETY_PROMPT.format(conversation=conv)}],
            "max_tokens": 100,
            "temperature": 0.0,
            "stream": False,
        }
        reply = await self._post("/v1/chat/completions", body)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise self._malformed("no choices[0].message.content") from None
        if not isinstance(content, str):
            raise self._malformed("the content is not text")
        unsafe, categories = self._parse(content, stage)
        if unsafe:
            cats = ", ".join(categories) or "unspecified"
            return Verdict(
                self.name, stage, "refused", "UNSAFE_CONTENT", f"the {_what(stage)} is unsafe ({cats})", categories
            )
        return Verdict(self.name, stage, "allowed")

    def _parse(self, content: str, stage: str) -> tuple[bool, tuple[str, ...]]:
        text = content.strip()
        m = re.search(r"\{.*\}", text, re.DOTALL)
        if m:
            try:
                obj = json.loads(m.group(0))
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                key = "User Safety" if stage == "input" else "Response Safety"
                rating = str(obj.get(key, obj.get("User Safety", ""))).strip().lower()
                if rating not in ("safe", "unsafe"):
                    raise self._malformed(f"{key!r} is {rating!r}, not safe or unsafe")
                cats = tuple(c.strip() for c in str(obj.get("Safety Categories", "")).split(",") if c.strip())
                return rating == "unsafe", cats
        first, _, rest = text.partition("\n")  # Llama Guard: "safe" or "unsafe\nS1,S3"
        if first.strip().lower() in ("safe", "unsafe"):
            cats = tuple(c.strip() for c in rest.split(",") if c.strip())
            return first.strip().lower() == "unsafe", cats
        raise self._malformed(f"cannot read a safety rating from {text[:60]!r}")


class ModerationGuard(_HttpGuard):
    def __init__(self, name: str, base_url: str, *, model: str = "", **kw: Any) -> None:
        super().__init__(name, base_url, **kw)
        self.model = model

    async def check(self, stage: str, question: str, answer: str) -> Verdict:
        body: dict[str, Any] = {"input": question if stage == "input" else answer}
        if self.model:
            body["model"] = self.model
        reply = await self._post("/v1/moderations", body)
        results = reply.get("results") if isinstance(reply, dict) else None
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            raise self._malformed("expected an object with a non-empty 'results' list")
        flagged = results[0].get("flagged")
        if not isinstance(flagged, bool):
            raise self._malformed("results[0].flagged is not true or false")
        if flagged:
            cats = results[0].get("categories") or {}
            names = tuple(sorted(k for k, v in cats.items() if v is True)) if isinstance(cats, dict) else ()
            return Verdict(
                self.name,
                stage,
                "refused",
                "FLAGGED_BY_MODERATION",
                f"the {_what(stage)} was flagged ({', '.join(names) or 'unspecified'})",
                names,
            )
        return Verdict(self.name, stage, "allowed")


def _what(stage: str) -> str:
    return "question" if stage == "input" else "answer"
