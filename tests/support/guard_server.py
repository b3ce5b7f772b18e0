"""Guard servers for tests (test doubles, not models), each speaking its protocol as the real
server does. The verdict: text containing a word from `unsafe_words` is unsafe.

- `nemo`: the NeMo Guardrails server's `POST /v1/chat/completions` with `config_id`, `messages`
  and `options` (rails, log.activated_rails). Allowed input comes back as the same message;
  a block answers the config's refusal with an activated rail whose `stop` is true. Like the
  real server, an internal failure (`internal_error=True`) is HTTP 200 "Internal server error.".
  An unknown config_id is 422 as FastAPI answers.
- `safety`: an OpenAI-protocol chat model that answers the NemoGuard content-safety prompt with
  its JSON verdict (`llama_guard=True`: Llama Guard's "safe" / "unsafe\\nS1").
- `moderation`: `POST /v1/moderations` -> {"id", "model", "results": [{"flagged", "categories",
  "category_scores"}]}.
Modes: `delay_s`, `status` (HTTP error), `malformed` (a reply of the wrong shape).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REFUSAL = "I'm sorry, I can't respond to that."


@dataclass
class GuardTestServer:
    unsafe_words: tuple[str, ...] = ("bomb", "poison")
    config_ids: tuple[str, ...] = ("content_safety",)
    llama_guard: bool = False
    internal_error: bool = False
    delay_s: float = 0.0
    status: int = 0
    malformed: bool = False
    api_key: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, kind: str) -> GuardTestServer:
        app = web.Application()
        if kind == "nemo":
            app.router.add_post("/v1/chat/completions", self._nemo)
        elif kind == "safety":
            app.router.add_post("/v1/chat/completions", self._safety)
        else:
            app.router.add_post("/v1/moderations", self._moderation)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _unsafe(self, text: str) -> bool:
        return any(re.search(rf"\b{w}\b", text, re.IGNORECASE) for w in self.unsafe_words)

    async def _begin(self, request: web.Request) -> dict[str, Any] | web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        body = await request.json()
        self.bodies.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status:
            return web.json_response({"error": {"message": "upstream unavailable"}}, status=self.status)
        if self.malformed:
            return web.json_response({"object": "unexpected"})
        return body

    async def _nemo(self, request: web.Request) -> web.Response:
        body = await self._begin(request)
        if isinstance(body, web.Response):
            return body
        if body.get("config_id") not in self.config_ids:
            return web.json_response(
                {"detail": f"Could not load the {body.get('config_id')} guardrails configuration."}, status=422
            )
        if self.internal_error:
            return web.json_response({"messages": [{"role": "assistant", "content": "Internal server error."}]})
        rails = body.get("options", {}).get("rails", ["input", "dialog", "retrieval", "output"])
        messages = body["messages"]
        checked = messages[-1]["content"]
        kind = "output" if messages[-1]["role"] == "assistant" else "input"
        blocked = kind in rails and self._unsafe(checked)
        rail = {
            "type": kind,
            "name": f"content safety check {kind}",
            "decisions": ["refuse to respond" if blocked else "execute content_safety_check"],
            "executed_actions": [],
            "stop": blocked,
            "additional_info": None,
            "started_at": 1.0,
            "finished_at": 1.2,
            "duration": 0.2,
        }
        content = REFUSAL if blocked else checked
        return web.json_response(
            {
                "messages": [{"role": "assistant", "content": content}],
                "llm_output": None,
                "output_data": None,
                "log": {"activated_rails": [rail], "stats": {}, "llm_calls": None, "internal_events": None},
                "state": None,
            }
        )

    async def _safety(self, request: web.Request) -> web.Response:
        body = await self._begin(request)
        if isinstance(body, web.Response):
            return body
        prompt = body["messages"][-1]["content"]
        conv = prompt.split("<BEGIN CONVERSATION>")[1].split("<END CONVERSATION>")[0]
        user, _, agent = conv.partition("response: agent:")
        verdict: dict[str, str] = {"User Safety": "unsafe" if self._unsafe(user) else "safe"}
        if agent:
            verdict["Response Safety"] = "unsafe" if self._unsafe(agent) else "safe"
        if "unsafe" in verdict.values():
            verdict["Safety Categories"] = "Violence, Guns and Illegal Weapons"
        if self.llama_guard:
            bad = verdict.get("Response Safety" if agent else "User Safety") == "unsafe"
            content = "unsafe\nS1,S4" if bad else "safe"
        else:
            import json

            content = json.dumps(verdict)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 400, "completion_tokens": 12, "total_tokens": 412},
            }
        )

    async def _moderation(self, request: web.Request) -> web.Response:
        body = await self._begin(request)
        if isinstance(body, web.Response):
            return body
        text = body.get("input")
        if not isinstance(text, str):
            return web.json_response({"error": {"message": "input must be a string"}}, status=400)
        bad = self._unsafe(text)
        cats = {"violence": bad, "harassment": False, "self-harm": False, "illicit/violent": bad}
        return web.json_response(
            {
                "id": "modr-1",
                "model": body.get("model", "omni-moderation-latest"),
                "results": [
                    {
                        "flagged": bad,
                        "categories": cats,
                        "category_scores": {k: (0.91 if v else 0.01) for k, v in cats.items()},
                        "category_applied_input_types": {k: ["text"] for k in cats},
                    }
                ],
            }
        )
