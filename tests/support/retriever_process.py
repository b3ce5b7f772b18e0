"""A retriever as its own OS process on a port the OS picks: `python -m tests.support.retriever_process`.

It reads the usual `DDNRAG_RETRIEVER_*` variables (the port forced to 0), writes one JSON line
`{"port": N}` to the file descriptor `PORT_FD` names once bound (stdout carries the JSON logs), then serves until
SIGTERM, as `python -m services.retriever.server` does.
Tests use it to run several replicas against one store without picking ports themselves.
"""

from __future__ import annotations

import asyncio
import json
import os

from kernel.config import load_env
from kernel.logs import setup_logging
from kernel.server import run_forever
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server


async def main() -> None:
    os.environ["DDNRAG_RETRIEVER_PORT"] = "0"
    os.environ.setdefault("DDNRAG_RETRIEVER_METRICS_PORT", "0")
    cfg = load_env(RetrieverConfig)
    setup_logging("retriever", cfg.log_level)
    app, port = await create_server(cfg)
    with os.fdopen(int(os.environ["PORT_FD"]), "w") as out:
        out.write(json.dumps({"port": port}) + "\n")
    await run_forever(app, cfg.shutdown_grace_s)


if __name__ == "__main__":
    asyncio.run(main())
