"""Embedder benchmark: three ratios measured side by side in one run on SciFact abstracts.

    .venv/bin/python bench/embedder.py [--state-dir DIR] [--scifact DIR] [--out FILE]

- setup (once per CPU and library versions): the quality gate, `make embedder-int8`
  (`scripts/export_embedder_openvino.py`: the OpenVINO and ONNX exports, ONNX Runtime dynamic
  int8, NNCF static int8 where VNNI/AMX exist, and the gate by retrieval,
  `services/embedder/gate.py`). It is NOT run by default: on this 2-core AVX2 machine it took
  1,875 s, most of it the torch fp32 reference over the SciFact corpus, and a benchmark must finish
  in under 10 minutes on a fresh checkout. The bench measures what the service's `auto` backend
  serves with the verdicts already recorded for this CPU (OpenVINO fp32, exported at first start
  in seconds, when none are), and says which. `--setup` runs the gate first when nothing is
  recorded, timed apart as `setup_s` with its own load averages; `total_s` then includes it.
- `service_over_raw`: chunks/s through the gRPC service (a real `python -m
  services.embedder.server` process, default `auto` backend, EmbedStream with 64-text messages,
  cache purged first) over `SentenceTransformer.encode(batch_size=32)` in this process (torch
  fp32), on the same chunks; both give L2-normalised 384-d vectors, and their cosine is reported.
  The CPU's ISA flags are recorded beside it (the goal is 2.0 on AVX2-only CPUs, 3.0 with
  native bf16 or VNNI).
- `dynamic_over_unbatched`: 64 concurrent clients, each sending one text per Embed call, texts/s
  through a server process with dynamic batching on over one with it off (`DDNRAG_EMBEDDER_
  DYNAMIC_BATCHING=0`: requests never share a model call), cache disabled in both.
- `cache_hit_speedup`: the same chunks again through the first server (all cache hits),
  time of the first pass over time of the second.

Other work shares the CPU, so each comparison alternates its two sides over the same texts in 4
rounds and sums the times: a swing in load hits both sides. The 1-minute load average is
recorded before and after. Writes `bench/results/embedder.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from clients.embedder import EmbedderClient, vectors_of  # noqa: E402

N_CHUNKS = 1000
CLIENTS = 64
STREAM_BATCH = 64
ROUNDS = 4


def load_chunks(scifact: Path, n: int) -> list[str]:
    out = []
    with (scifact / "corpus.jsonl").open() as f:
        for line in f:
            text = json.loads(line)["text"].strip()
            if text:
                out.append(text)
            if len(out) == n:
                break
    return out


class ServerProcess:
    """`python -m services.embedder.server` on a free port (port 0, read back from its log)."""

    def __init__(self, state_dir: Path, **env: str) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DDNRAG_EMBEDDER_PORT": "0",
            "DDNRAG_EMBEDDER_METRICS_PORT": "0",
            "DDNRAG_EMBEDDER_STATE_DIR": str(state_dir),
            "DDNRAG_EMBEDDER_LOG_LEVEL": "INFO",
            **env,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.start_s = 0.0

    async def __aenter__(self) -> ServerProcess:
        t0 = time.perf_counter()
        self.proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "services.embedder.server"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        port = await asyncio.to_thread(self._read_until, "serving")
        self.address = f"127.0.0.1:{port}"
        await asyncio.to_thread(self._read_until, "ready")
        self.start_s = time.perf_counter() - t0
        # Keep draining its log so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def _read_until(self, msg: str) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            fields = rec.get("fields", {})
            if rec.get("message") == msg:
                return int(fields.get("port", 0))
            if rec.get("level") == "error":
                raise RuntimeError(f"embedder failed: {rec.get('message')} {fields.get('exc', '')}")
        raise RuntimeError("the embedder exited before it was ready")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 30)


async def through_stream(client: EmbedderClient, chunks: list[str]) -> tuple[float, np.ndarray]:
    async def batches() -> AsyncIterator[list[str]]:
        for i in range(0, len(chunks), STREAM_BATCH):
            yield chunks[i : i + STREAM_BATCH]

    t0 = time.perf_counter()
    parts = [vectors_of(r.embeddings, r.dimension) async for r in client.embed_stream(batches())]
    return time.perf_counter() - t0, np.concatenate(parts)


async def concurrent_singles(client: EmbedderClient, texts: list[str]) -> float:
    """CLIENTS workers, each sending one text per Embed call until `texts` run out; seconds."""
    queue = list(reversed(texts))

    async def worker() -> None:
        while queue:
            await client.embed([queue.pop()])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return time.perf_counter() - t0


def load_raw_model(chunks: list[str]) -> object:
    from sentence_transformers import SentenceTransformer

    from embedding.packaged import packaged_model_dir

    model = SentenceTransformer(str(packaged_model_dir()), device="cpu", local_files_only=True)
    model.encode(chunks[:64], batch_size=32)  # warm-up
    return model


def raw_encode(model: object, chunks: list[str]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    vecs = model.encode(chunks, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, vecs


def batching_ceiling(state_dir: Path, backend: str, texts: list[str]) -> dict:
    """What batching can gain at most on this machine: the service's backend run in-process on
    one text per call vs 16 length-sorted texts per call (no gRPC, no queue), alternated."""
    from kernel.config import load_env
    from services.embedder.config import EmbedderConfig
    from services.embedder.loader import load_model

    model = load_model(load_env(EmbedderConfig, environ={}, state_dir=str(state_dir), backend=backend))
    ids = sorted((e.ids for e in model.tokenization.encode(texts)), key=len)
    model.run_batch(ids[:16])
    singles = batched = 0.0
    for start in range(0, len(ids), 32):
        part = ids[start : start + 32]
        t0 = time.perf_counter()
        for x in part:
            model.run_batch([x])
        t1 = time.perf_counter()
        for k in range(0, len(part), 16):
            model.run_batch(part[k : k + 16])
        singles += t1 - t0
        batched += time.perf_counter() - t1
    return {
        "backend": model.backend.name,
        "single_texts_per_s": round(len(ids) / singles, 1),
        "batch16_texts_per_s": round(len(ids) / batched, 1),
        "ratio": round(singles / batched, 2),
    }


async def in_process_dynamic(state_dir: Path, texts: list[str]) -> dict:
    """The same 64-client single-text load on the core (`Embedder`) in this process, no gRPC:
    dynamic batching on vs off, alternated in 2 rounds. It isolates the batcher from the RPC
    layer's CPU cost."""
    from kernel.config import load_env
    from services.embedder.config import EmbedderConfig
    from services.embedder.core import Embedder

    cores = {}
    for label, dynamic in (("dynamic", True), ("unbatched", False)):
        cfg = load_env(
            EmbedderConfig, environ={}, state_dir=str(state_dir), cache_max_bytes=0, dynamic_batching=dynamic
        )
        cores[label] = Embedder(cfg)
        await cores[label].start()
    elapsed = {"dynamic": 0.0, "unbatched": 0.0}
    try:
        half = len(texts) // 2
        for part in (texts[:half], texts[half:]):
            for label, core in cores.items():
                queue = list(part)

                async def worker(core: Embedder = core, queue: list[str] = queue) -> None:
                    while queue:
                        await core.embed([queue.pop()])

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(CLIENTS)))
                elapsed[label] += time.perf_counter() - t0
    finally:
        for core in cores.values():
            await core.close()
    return {
        "dynamic_texts_per_s": round(len(texts) / elapsed["dynamic"], 1),
        "unbatched_texts_per_s": round(len(texts) / elapsed["unbatched"], 1),
        "ratio": round(elapsed["unbatched"] / elapsed["dynamic"], 2),
    }


def gate_record(state_dir: Path) -> dict | None:
    from embedding import export
    from embedding.packaged import packaged_model_dir

    return export.Artifacts(state_dir, packaged_model_dir()).gates().read()


def setup(state_dir: Path, scifact: Path, nfcorpus: Path) -> tuple[dict, float, dict]:
    """The quality gate's verdicts for this CPU and library versions, after running the setup
    step (exports, variants, gate) when none is recorded; that step's seconds (0 when cached)
    and the 1-minute load average before and after it."""
    record = gate_record(state_dir)
    load = {"before": round(os.getloadavg()[0], 2)}
    if record is not None:
        return record, 0.0, {}
    print("no quality-gate verdict for this CPU and these libraries: setup runs the gate first", flush=True)
    t0 = time.perf_counter()
    script = ROOT / "scripts" / "export_embedder_openvino.py"
    args = ["--state-dir", str(state_dir), "--scifact", str(scifact), "--nfcorpus", str(nfcorpus)]
    subprocess.run([sys.executable, str(script), *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    record = gate_record(state_dir)
    if record is None:
        raise RuntimeError(f"the gate ran but recorded nothing under {state_dir}")
    return record, time.perf_counter() - t0, {**load, "after": round(os.getloadavg()[0], 2)}


async def run(state_dir: Path, scifact: Path, n_chunks: int, single_texts: int) -> dict:
    chunks = load_chunks(scifact, n_chunks)

    # Other work shares this machine's CPU, so each comparison alternates its two sides in
    # ROUNDS rounds (the same texts on both sides) and sums the times: load swings hit both.
    print("loading sentence-transformers (torch fp32) in-process...", flush=True)
    raw_model = await asyncio.to_thread(load_raw_model, chunks)
    quarters = [chunks[i : i + n_chunks // ROUNDS] for i in range(0, n_chunks, n_chunks // ROUNDS)]
    raw_s = miss_s = hit_s = 0.0
    raw_parts, svc_parts, hit_parts = [], [], []
    results: dict = {}
    async with ServerProcess(state_dir) as srv:
        async with EmbedderClient(srv.address, timeout_s=600) as client:
            info = await client.info()
            await client.purge_cache()
            for k, part in enumerate(quarters):
                print(f"round {k + 1}/{ROUNDS}: raw encode, service ({info.backend}, {info.dtype}), again", flush=True)
                t, v = await asyncio.to_thread(raw_encode, raw_model, part)
                raw_s += t
                raw_parts.append(v)
                t, v = await through_stream(client, part)
                miss_s += t
                svc_parts.append(v)
                t, v = await through_stream(client, part)  # the same chunks again: cache hits
                hit_s += t
                hit_parts.append(v)
            stats = await client.cache_stats()
    raw_vecs, svc_vecs, hit_vecs = np.concatenate(raw_parts), np.concatenate(svc_parts), np.concatenate(hit_parts)
    del raw_model
    cos = np.sum(svc_vecs * raw_vecs, axis=1)
    results["service"] = {
        "backend": info.backend,
        "dtype": info.dtype,
        "device": info.device,
        "start_s": round(srv.start_s, 2),
        "chunks_per_s": round(n_chunks / miss_s, 1),
        "cosine_vs_raw_mean": round(float(cos.mean()), 5),
        "cosine_vs_raw_min": round(float(cos.min()), 5),
    }
    results["cache"] = {
        "miss_pass_s": round(miss_s, 3),
        "hit_pass_s": round(hit_s, 3),
        "hit_chunks_per_s": round(n_chunks / hit_s, 1),
        "identical_vectors": bool(np.array_equal(svc_vecs, hit_vecs)),
        "hits": stats.hits,
        "misses": stats.misses,
    }

    singles = chunks[:single_texts]
    elapsed = {"dynamic": 0.0, "unbatched": 0.0}
    no_cache = {"DDNRAG_EMBEDDER_CACHE_MAX_BYTES": "0"}
    async with (
        ServerProcess(state_dir, DDNRAG_EMBEDDER_DYNAMIC_BATCHING="1", **no_cache) as dyn,
        ServerProcess(state_dir, DDNRAG_EMBEDDER_DYNAMIC_BATCHING="0", **no_cache) as unb,
        EmbedderClient(dyn.address, timeout_s=600) as dyn_client,
        EmbedderClient(unb.address, timeout_s=600) as unb_client,
    ):
        clients = {"dynamic": dyn_client, "unbatched": unb_client}
        for c in clients.values():
            await concurrent_singles(c, singles[:CLIENTS])  # warm the connections
        step = max(CLIENTS, len(singles) // ROUNDS)
        for k in range(0, len(singles), step):
            for label, c in clients.items():
                print(f"{CLIENTS} concurrent single-text clients, batching {label}, texts {k}..", flush=True)
                elapsed[label] += await concurrent_singles(c, singles[k : k + step])
    rates = {label: len(singles) / t for label, t in elapsed.items()}

    raw_rate = n_chunks / raw_s
    ceiling = await asyncio.to_thread(batching_ceiling, state_dir, info.backend, chunks[: min(128, single_texts)])
    print("the same single-text load on the core in-process (no gRPC)...", flush=True)
    core_only = await in_process_dynamic(state_dir, chunks[: min(256, single_texts)])
    return {
        "chunks": n_chunks,
        "dataset": f"SciFact corpus abstracts (first {n_chunks:,} non-empty)",
        "ratios": {
            "service_over_raw": round(results["service"]["chunks_per_s"] / raw_rate, 2),
            "dynamic_over_unbatched": round(rates["dynamic"] / rates["unbatched"], 2),
            "cache_hit_speedup": round(miss_s / hit_s, 1),
        },
        "raw": {
            "what": "SentenceTransformer.encode, torch fp32, batch 32, in-process, L2-normalised",
            "chunks_per_s": round(raw_rate, 1),
        },
        **results,
        "concurrency": {
            "clients": CLIENTS,
            "texts": len(singles),
            "dynamic_texts_per_s": round(rates["dynamic"], 1),
            "unbatched_texts_per_s": round(rates["unbatched"], 1),
        },
        "backend_batching_ceiling": ceiling,
        "in_process_dynamic_over_unbatched": core_only,
    }


def machine() -> dict:
    from embedding import variants
    from embedding.runtime import device_name

    flags = variants.cpu_flags()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": device_name("cpu"),
        "cpu_flags": list(flags),
        "int8_native": variants.int8_native(flags),
        "bf16_native": variants.bf16_native(flags),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", default=os.environ.get("DDNRAG_EMBEDDER_STATE_DIR", str(ROOT / "data" / "embedder")))
    ap.add_argument("--scifact", default=str(DATA / "scifact"))
    ap.add_argument("--nfcorpus", default=str(DATA / "nfcorpus"), help="the gate's held-out check (setup only)")
    ap.add_argument("--chunks", type=int, default=N_CHUNKS, help="SciFact abstracts for service_over_raw")
    ap.add_argument("--single-texts", type=int, default=512, help="texts the 64 single-text clients send")
    ap.add_argument(
        "--setup",
        action="store_true",
        help="run the quality gate first when no verdict is recorded for this CPU (`make embedder-int8`; "
        "1,875 s on 2 cores); by default the service serves what is recorded (fp32 when nothing is)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "embedder.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    state_dir = Path(args.state_dir)
    setup_load: dict = {}
    if not args.setup:
        gate, setup_s = gate_record(state_dir) or {}, 0.0
    else:
        gate, setup_s, setup_load = setup(state_dir, Path(args.scifact), Path(args.nfcorpus))
    t1 = time.perf_counter()
    bench_load = os.getloadavg()[0]
    measured = asyncio.run(run(state_dir, Path(args.scifact), args.chunks, args.single_texts))
    bench_s = time.perf_counter() - t1
    info = machine()
    native = info["int8_native"] or info["bf16_native"]
    report = {
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info,
        "load_avg_1m": {
            "before": round(load_before, 2),
            "bench_before": round(bench_load, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        # The ISA flags beside the ratio they decide (AVX2 only: goal 2.0; bf16 or VNNI: 3.0).
        "service_over_raw_cpu": {"cpu_model": info["cpu_model"], "cpu_flags": info["cpu_flags"]},
        **measured,
        "goals": {"service_over_raw": 3.0 if native else 2.0, "dynamic_over_unbatched": 5.0, "cache_hit_speedup": 50.0},
        "quality_gate": {k: v for k, v in gate.items() if k != "cached"},
        "int8_quality_gate": gate.get("variants", {}).get("int8") or {"ran": False},
        "served_variant_gate": gate.get("variants", {}).get(
            gate.get("served", ""), {"variant": gate.get("served", "fp32")}
        ),
        "setup_s": round(setup_s, 1),
        "setup_load_avg_1m": setup_load,
        "setup": (
            "ran in this run"
            if setup_s
            else "not run (no verdict recorded for this CPU: the service served fp32; `make embedder-int8` or --setup runs the gate)"
            if not args.setup and not gate
            else "cached: the gate's verdicts for this CPU were already recorded"
        ),
        "bench_s": round(bench_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
