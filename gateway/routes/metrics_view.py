"""The Metrics page's data: `GET /api/metrics/window?minutes=N` (1-30, default 5).

The gateway scrapes its peers' metrics endpoints (DDNRAG_GATEWAY_METRICS_PEERS) and its own
registry every DDNRAG_GATEWAY_METRICS_SCRAPE_INTERVAL_S seconds in the background, and once more
when the page asks (at most once a second), so a question just asked shows at once. The figures
are computed server-side by `metrics_window.py`; the browser only draws them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest

from ..errors import ApiError
from ..metrics_window import History, Snapshot, parse
from ..state import CONFIG, METRICS

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


class Scraper:
    """Scrapes the peers and the gateway's own registry into a History."""

    def __init__(self, app: web.Application, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.session = session
        self.history = History()
        self.peers = [_peer(p) for p in app[CONFIG].metrics_peers]
        self.lock = asyncio.Lock()
        self.last = 0.0

    async def _one(self, job: str, url: str) -> dict | None:  # type: ignore[type-arg]
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                resp.raise_for_status()
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            log.debug("metrics scrape failed", extra={"url": url, "error": str(err)})
            return None
        return await asyncio.to_thread(parse, text, job, url)

    async def scrape(self) -> None:
        async with self.lock:
            at = time.time()
            got = await asyncio.gather(*(self._one(job, url) for job, url in self.peers))
            snap = Snapshot(at)
            for (job, _url), samples in zip(self.peers, got, strict=True):
                if samples is None:
                    snap.failed.append(job)
                else:
                    snap.samples.update(samples)
            own = generate_latest(self.app[METRICS].registry).decode()
            snap.samples.update(parse(own, "gateway", "self"))
            self.history.add(snap)
            self.last = time.monotonic()

    async def fresh(self) -> None:
        """A scrape now unless one finished less than a second ago."""
        if time.monotonic() - self.last >= 1.0:
            await self.scrape()

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.scrape()
            except Exception:
                log.exception("metrics scrape failed")
            await asyncio.sleep(interval_s)


def _peer(spec: str) -> tuple[str, str]:
    job, sep, url = spec.partition("=")
    if not sep or not job.strip() or not url.strip().startswith(("http://", "https://")):
        raise ValueError(f"DDNRAG_GATEWAY_METRICS_PEERS: {spec!r} is not '<service>=<http(s) URL>'")
    return job.strip(), url.strip()


SCRAPER: web.AppKey[Scraper] = web.AppKey("metrics_scraper")


async def scraper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Opens the scraper's HTTP session and runs its background loop while the app runs."""
    async with aiohttp.ClientSession() as session:
        scraper = app[SCRAPER] = Scraper(app, session)
        interval = app[CONFIG].metrics_scrape_interval_s
        task = asyncio.create_task(scraper.run(interval)) if interval > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@routes.get("/api/metrics/window")
async def window(request: web.Request) -> web.Response:
    """Every figure of the Metrics page over the last `minutes` (1-30)."""
    raw = request.query.get("minutes", "5")
    try:
        minutes = float(raw)
    except ValueError:
        raise ApiError(400, f"minutes must be a number from 1 to 30, got {raw!r}") from None
    if not 1 <= minutes <= 30:
        raise ApiError(400, f"minutes must be from 1 to 30, got {raw}")
    scraper = request.app[SCRAPER]
    await scraper.fresh()
    return web.json_response(scraper.history.window(minutes * 60))
