#!/usr/bin/env python3
"""The lean reference peer: an aiohttp server passing chat completions through an aiohttp client session.

    python bench/ref_proxy.py --port 19101 --upstream http://127.0.0.1:19000/v1 [--workers 2]

POST /v1/chat/completions forwards the raw body to <upstream>/chat/completions and relays the answer:
whole for JSON, chunk by chunk as it arrives for `text/event-stream`. No parsing, no auth, no logging:
what a minimal Python proxy costs, so `ours ÷ ref-aiohttp` shows what the gateway's features cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {"Content-Type": "application/json",
               "Authorization": request.headers.get("Authorization", "Bearer bench")}
    async with request.app[SESSION].post(request.app[UPSTREAM], data=body, headers=headers) as up:
        ctype = up.headers.get("Content-Type", "application/json")
        if not ctype.startswith("text/event-stream"):
            return web.Response(body=await up.read(), status=up.status, headers={"Content-Type": ctype})
        out = web.StreamResponse(status=up.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
        await out.prepare(request)
        try:
            async for data in up.content.iter_any():
                await out.write(data)
            await out.write_eof()
        except ConnectionResetError:  # the client went away mid-stream: nothing left to relay
            pass
        return out


async def _session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=600))
    yield
    await app[SESSION].close()


def make_app(upstream_base: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream_base.rstrip("/") + "/chat/completions"
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(host: str, port: int, upstream_base: str, reuse_port: bool) -> None:
    runner = web.AppRunner(make_app(upstream_base), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ref_proxy on http://{host}:{port} -> {upstream_base}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=19101)
    ap.add_argument("--upstream", default="http://127.0.0.1:19000/v1", help="the upstream's OpenAI base URL")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    a = ap.parse_args()
    for _ in range(a.workers - 1):  # forked before any loop exists; the kernel spreads connections
        if os.fork() == 0:
            break
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(a.host, a.port, a.upstream, a.workers > 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
