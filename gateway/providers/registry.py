"""One provider instance per deployment, kept across policy reloads while its parameters are unchanged.

How a provider is built is its kind's business (`kinds.py`); this module keeps the instances, the in-flight
counts and the load reports."""

from __future__ import annotations

import aiohttp
import orjson

import asyncio
import gc
import logging
import time

from gateway.policy.schema import Deployment, ModelSpec, Policy
from gateway.providers.base import EdgeLoad, Provider
from gateway.providers.kinds import check_policy, lookup


class Providers:
    def __init__(self, max_body: int | None = None, max_event: int | None = None) -> None:
        self._caps = {k: v for k, v in (("max_body", max_body), ("max_event", max_event)) if v}
        self._session: aiohttp.ClientSession | None = None
        self._by_key: dict[bytes, Provider] = {}
        self._in_process: dict[str, Provider] = {}  # model name -> its in-process provider
        self.in_flight: dict[str, int] = {}        # deployment name -> requests running
        self._remote: dict[str, tuple[float, EdgeLoad]] = {}   # model -> (when, load the servers reported)
        self._probes: dict[tuple, asyncio.Task] = {}
        self._warmed: set[str] = set()             # warm-ups done (or under way) in this process

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    @property
    def caps(self) -> dict[str, int]:
        """The upstream body and event caps every provider is built with (only those that are set)."""
        return dict(self._caps)

    def get(self, model: ModelSpec, deployment: Deployment) -> Provider:
        kind = lookup(model.client)
        if kind.in_process:
            provider = self._in_process.get(model.name)
            if provider is None:
                provider = self._in_process[model.name] = kind.make(self, model, deployment)
            return provider
        key = orjson.dumps([model.client, deployment.params], option=orjson.OPT_SORT_KEYS)
        provider = self._by_key.get(key)
        if provider is None:
            provider = self._by_key[key] = kind.make(self, model, deployment)
        return provider

    def edge_load(self, policy: Policy, name: str) -> EdgeLoad | None:
        """Load of an edge model: an in-process model's own report, else in-flight counts."""
        model = policy.models.get(name)
        if model is None:
            return None
        if lookup(model.client).in_process:
            provider = self._in_process.get(name)
            return provider.load() if provider is not None else None
        running = sum(self.in_flight.get(d.name, 0) for d in model.deployments)
        local = EdgeLoad(queue_depth=max(0, running - len(model.deployments)), in_flight=running)
        reported = self._remote.get(name)
        if reported is None or time.monotonic() - reported[0] > 3 * model.load_interval:
            return local
        remote = reported[1]  # the servers know about traffic from other gateways too
        return EdgeLoad(queue_depth=max(local.queue_depth, remote.queue_depth),
                        in_flight=max(local.in_flight, remote.in_flight),
                        tokens_per_second=remote.tokens_per_second, expected_wait_s=remote.expected_wait_s)

    def sync_probes(self, policy: Policy) -> None:
        """Poll the load of remote edge servers whose policy entry has `load: {probe: ...}`."""
        wanted = {(m.name, m.load_probe, m.load_interval, tuple(d.params.get("api_base") or "" for d in m.deployments))
                  for m in policy.models.values() if m.load_probe}
        for key in list(self._probes):
            if key not in wanted:
                self._probes.pop(key).cancel()
        for key in wanted:
            if key not in self._probes:
                self._probes[key] = asyncio.get_running_loop().create_task(self._poll(*key))

    async def _poll(self, name: str, kind: str, interval: float, bases: tuple[str, ...]) -> None:
        from gateway.providers.edge_load import poll_remote_load

        while True:
            try:
                loads = [await poll_remote_load(self.session(), kind, base_url=base, timeout=min(1.0, interval))
                         for base in bases]
                found = [x for x in loads if x is not None]
                if found:
                    self._remote[name] = (time.monotonic(), EdgeLoad(
                        queue_depth=sum(x.queue_depth for x in found), in_flight=sum(x.in_flight for x in found),
                        tokens_per_second=sum(x.tokens_per_second for x in found),
                        expected_wait_s=min(x.expected_wait_s for x in found)))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a probe must never stop
                logging.getLogger("gateway.providers").exception("edge load probe of %s failed", name)
            await asyncio.sleep(interval)

    async def start(self, policy: Policy) -> None:
        """Refuse a policy whose client kinds have no provider here; load in-process models up front so the
        first request does not pay for it; start load probes."""
        check_policy(policy)
        self.sync_probes(policy)
        await self.warm_up(policy)
        for model in policy.models.values():
            if lookup(model.client).in_process and model.available:  # unavailable: not installed here
                provider = self.get(model, model.deployments[0])
                start = getattr(provider, "start", None)
                if start is not None:
                    await start()
        # What was loaded so far (litellm's tables above all) lives as long as the process: leave it out
        # of the collector's full passes, which otherwise stall the event loop for hundreds of ms each.
        gc.collect()
        gc.freeze()

    async def warm_up(self, policy: Policy) -> None:
        """Run the warm-ups of the kinds a policy uses (litellm's import and lazy set-up above all) once, the
        first time a policy needs them: at start (before ready) or when a reload brings one in, so that no
        client request pays for them."""
        for model in policy.models.values():
            warm = lookup(model.client).warm_up
            if warm is not None and warm.name not in self._warmed:
                self._warmed.add(warm.name)
                await warm.run()

    async def aclose(self) -> None:
        for task in self._probes.values():
            task.cancel()
        for provider in list(self._by_key.values()) + list(self._in_process.values()):
            await provider.aclose()
        if self._session is not None:
            await self._session.close()

