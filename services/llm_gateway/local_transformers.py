"""A local transformers backend: a causal LM from a model directory (for a GPU node; works on
CPU too), loaded from disk only (`local_files_only`, nothing downloaded).

Configured as `{"name": "local", "kind": "transformers", "model_dir": "/models/llama",
"device": "cuda", "dtype": "bfloat16", "max_concurrency": 1}`. Generation runs on worker threads
(never on the event loop); each new token is decoded incrementally and handed to the event loop.
Closing the stream sets a flag a `StoppingCriteria` checks after every token, so a cancelled
request stops generating at the next token. Usage counts come from the model's own tokenizer
(source "backend").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kernel.errors import ErrorKind

from .backend import BackendError, BackendLimits, BackendRequest, BackendSpec, Delta
from .domain import Usage

_END = object()


class TransformersBackend:
    """A causal LM served in-process with `transformers`."""

    kind = "transformers"

    def __init__(
        self,
        name: str,
        model_dir: str,
        *,
        device: str = "",
        dtype: str = "",
        model_id: str = "",
        limits: BackendLimits | None = None,
    ) -> None:
        self.name = name
        self.model_dir = model_dir
        self.device = device
        self.dtype = dtype
        self.default_model = model_id or Path(model_dir).name
        self.limits = limits or BackendLimits(max_concurrency=1, retries=0, first_token_timeout_s=120.0)
        self._pool = ThreadPoolExecutor(max_workers=self.limits.max_concurrency, thread_name_prefix=f"llm-{name}")
        self._lock = threading.Lock()
        self._model: Any = None
        self._tok: Any = None

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> TransformersBackend:
        o = spec.options
        return cls(
            spec.name,
            str(o["model_dir"]),
            device=str(o.get("device", "")),
            dtype=str(o.get("dtype", "")),
            model_id=str(o.get("model", "")),
            limits=spec.limits,
        )

    def models(self) -> list[str]:
        return [self.default_model]

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- worker thread ----
    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                kwargs: dict[str, Any] = {"local_files_only": True}
                if self.dtype:
                    kwargs["dtype"] = getattr(torch, self.dtype)
                tok = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.model_dir, **kwargs).to(device)
                model.eval()
                self._tok, self._model = tok, model
            return self._tok, self._model

    def _prompt_ids(self, tok: Any, messages: list[dict[str, str]]) -> Any:
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]

    def _generate(self, request: BackendRequest, push: Any, stop: threading.Event) -> None:
        """Runs on a worker thread: generates and pushes ("text", str) / ("end", finish, usage)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        tok, model = self._load()
        ids = self._prompt_ids(tok, list(request.prompt.messages))
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = ids.to(model.device)
        prompt_len = int(ids.shape[-1])

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                n = input_ids.shape[0]
                return torch.full((n,), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        class Streamer(BaseStreamer):
            """Incremental decode (as TGI does): decodes only the last few tokens each step and
            emits the text the newest token adds, holding back an incomplete character."""

            def __init__(self) -> None:
                self.first = True  # generate() first puts the prompt
                self.ids: list[int] = []
                self.prefix = 0
                self.read = 0

            def put(self, value: Any) -> None:
                if self.first:
                    self.first = False
                    return
                self.ids.extend(int(v) for v in value.reshape(-1).tolist())
                before = tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
                after = tok.decode(self.ids[self.prefix :], skip_special_tokens=True)
                if len(after) > len(before) and not after.endswith("\ufffd"):
                    push(("text", after[len(before) :]))
                    self.prefix, self.read = self.read, len(self.ids)

            def end(self) -> None:
                return None

        streamer = Streamer()
        sampling = request.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "do_sample": sampling,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Cancelled()]),
            "attention_mask": torch.ones_like(ids),
        }
        if sampling:
            kwargs["temperature"] = request.temperature
        if tok.pad_token_id is not None:
            kwargs["pad_token_id"] = tok.pad_token_id
        with torch.inference_mode():
            out = model.generate(ids, **kwargs)
        completion = int(out.shape[-1]) - prompt_len
        finish = "cancelled" if stop.is_set() else ("length" if completion >= request.max_tokens else "stop")
        push(("end", finish, Usage(prompt_len, completion, "backend")))

    # ---- async side ----
    async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def push(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                self._generate(request, push, stop)
            except Exception as err:  # noqa: BLE001 - reported to the caller as a backend error
                push(("error", f"{type(err).__name__}: {err}"))

        fut = loop.run_in_executor(self._pool, run)
        try:
            while True:
                item = await queue.get()
                if item[0] == "text":
                    yield Delta(text=item[1])
                elif item[0] == "end":
                    yield Delta(finish_reason=item[1], usage=item[2])
                    return
                else:
                    raise BackendError(
                        ErrorKind.UNAVAILABLE,
                        f"local model {self.default_model!r} failed: {item[1][:300]}",
                        reason="LOCAL_MODEL_FAILED",
                        backend=self.name,
                        retryable=False,
                    )
        finally:
            stop.set()  # the generation thread stops at its next token
            fut.cancel()
