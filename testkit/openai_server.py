"""A small OpenAI-compatible chat-completions server for tests and benchmarks (a test double,
not a model): it speaks the real streaming protocol (SSE `chat.completion.chunk` messages, an
optional usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`) on loopback.

Variants, set on the instance (tests may change them between requests):
- normal: streams `tokens` (default: a short cited answer) as fast as it can, or at `rate_tps`
  tokens per second (paced against absolute time, so high rates stay accurate);
- slow: `first_token_delay_s` before the first token, `token_delay_s` between tokens;
- stalled: `stall_after=N` sends N tokens, then nothing until the client goes away;
- malformed: `malformed_after=N` sends N tokens, then `malformed_payload` as a data line;
- erroring: `status=500` (or 400, 401, 429, ...) answers with that status and an OpenAI error
  body; `fail_first=N` makes only the first N requests fail that way (for retries);
- dropping: `drop_after=N` sends N tokens, then closes the connection without `[DONE]`;
- stamped (benchmarks): `stamp=True` makes each token "<i>@<monotonic ns at emission> ";
- disconnect-recording: every request is recorded in `records` with `started_ns`,
  `first_token_ns`, `ended_ns`, `disconnected_ns` (perf_counter_ns when aiohttp saw the client go
  away: the handler is cancelled then, as `handler_cancellation=True` asks), `tokens_sent` and
  `completed`.

`api_key` set: requests without `Authorization: Bearer <api_key>` get 401.

As a process (benchmarks): `python -m testkit.openai_server --tokens 2000 --rate 0`
prints `PORT <n>` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_REPLY = "Object storage keeps data as objects in buckets [1]. GPUs read those objects in parallel [2]."


@dataclass
class RequestRecord:
    body: dict[str, Any]
    headers: dict[str, str]
    started_ns: int
    first_token_ns: int = 0
    ended_ns: int = 0
    disconnected_ns: int = 0
    tokens_sent: int = 0
    completed: bool = False
    status: int = 200


def split_tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*|\s+", text)


@dataclass
class OpenAITestServer:
    model: str = "test-model"
    tokens: list[str] = field(default_factory=lambda: split_tokens(DEFAULT_REPLY))
    rate_tps: float = 0.0
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    stall_after: int | None = None
    malformed_after: int | None = None
    malformed_payload: str = '{"id": "x", "choices": [ {"delta": '
    drop_after: int | None = None
    status: int = 200
    fail_first: int | None = None
    error_message: str = "the test server was told to fail"
    api_key: str = ""
    send_usage: bool = True
    # Benchmarks: each token's text becomes "<i>@<time.monotonic_ns() at emission> ", so a reader
    # in another process on the same machine can measure each token's delivery latency.
    stamp: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    records: list[RequestRecord] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _bound: int = 0

    # ---- lifecycle ----
    async def start(self) -> OpenAITestServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self._bound = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAITestServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def bound_port(self) -> int:
        return self._bound

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._bound}/v1"

    # ---- handlers ----
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = RequestRecord(body={}, headers=dict(request.headers), started_ns=time.perf_counter_ns())
        self.records.append(rec)
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            rec.status = 401
            return self._error(401, "Incorrect API key provided.", "authentication_error")
        try:
            rec.body = await request.json()
        except ValueError:
            rec.status = 400
            return self._error(400, "the body is not JSON")
        failing = self.status != 200 and (self.fail_first is None or len(self.records) <= self.fail_first)
        if failing:
            rec.status = self.status
            return self._error(self.status, self.error_message, "server_error" if self.status >= 500 else "error")
        if not rec.body.get("stream"):
            rec.status = 400
            return self._error(400, "this test server only streams; send stream=true")
        max_tokens = int(rec.body.get("max_tokens") or 1 << 30)
        include_usage = bool((rec.body.get("stream_options") or {}).get("include_usage")) and self.send_usage
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            await self._stream(request, resp, rec, max_tokens, include_usage)
        except asyncio.CancelledError:
            rec.disconnected_ns = time.perf_counter_ns()
            raise
        except (ConnectionResetError, ConnectionError):
            rec.disconnected_ns = time.perf_counter_ns()
        finally:
            rec.ended_ns = time.perf_counter_ns()
        return resp

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, rec: RequestRecord, max_tokens: int, usage: bool
    ) -> None:
        await resp.write(self._chunk({"role": "assistant", "content": ""}))
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        t0 = time.perf_counter()
        toks = self.tokens[:max_tokens]
        for i, tok in enumerate(toks):
            if self.stall_after is not None and i == self.stall_after:
                await asyncio.Event().wait()  # until the client goes away (handler cancelled)
            if self.malformed_after is not None and i == self.malformed_after:
                await resp.write(b"data: " + self.malformed_payload.encode() + b"\n\n")
                await resp.write_eof()
                return
            if self.drop_after is not None and i == self.drop_after:
                assert request.transport is not None
                request.transport.abort()
                return
            if self.rate_tps:
                ahead = t0 + i / self.rate_tps - time.perf_counter()
                if ahead > 0.001:
                    await asyncio.sleep(ahead)
            elif self.token_delay_s and i:
                await asyncio.sleep(self.token_delay_s)
            if self.stamp:
                tok = f"{i}@{time.monotonic_ns()} "
            await resp.write(self._chunk({"content": tok}))
            if i == 0:
                rec.first_token_ns = time.perf_counter_ns()
            rec.tokens_sent += 1
        finish = "length" if len(self.tokens) > max_tokens else "stop"
        await resp.write(self._chunk({}, finish))
        if usage:
            prompt = sum(len(str(m.get("content", "")).split()) for m in rec.body.get("messages", []))
            doc = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(toks), "total_tokens": prompt + len(toks)},
            }
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        rec.completed = True


async def _serve(args: argparse.Namespace) -> None:
    srv = OpenAITestServer(
        tokens=[f"t{i} " for i in range(args.tokens)] if args.tokens else split_tokens(DEFAULT_REPLY),
        rate_tps=args.rate,
        stamp=args.stamp,
        port=args.port,
        model=args.model,
    )
    await srv.start()
    print(f"PORT {srv.bound_port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=0, help="tokens per answer (0: the default reply)")
    ap.add_argument("--rate", type=float, default=0.0, help="tokens per second (0: as fast as possible)")
    ap.add_argument("--model", default="test-model")
    ap.add_argument("--stamp", action="store_true", help="tokens carry their emission time (monotonic ns)")
    asyncio.run(_serve(ap.parse_args()))


if __name__ == "__main__":
    main()
