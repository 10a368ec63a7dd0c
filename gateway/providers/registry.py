"""One provider instance per deployment, kept across policy reloads while its parameters are unchanged."""

from __future__ import annotations

import aiohttp
import orjson

import asyncio
import gc
import logging
import time

from gateway.policy.schema import Deployment, ModelSpec, Policy
from gateway.providers.base import EdgeLoad, Provider
from gateway.providers.litellm_client import LitellmProvider
from gateway.providers.native import NativeOpenAIProvider

_NATIVE_SKIP = {"model", "api_base", "api_key", "extra_headers"}


class Providers:
    def __init__(self, max_body: int | None = None, max_event: int | None = None) -> None:
        self._caps = {k: v for k, v in (("max_body", max_body), ("max_event", max_event)) if v}
        self._session: aiohttp.ClientSession | None = None
        self._by_key: dict[bytes, Provider] = {}
        self._embedded: dict[str, Provider] = {}   # model name -> embedded provider
        self.in_flight: dict[str, int] = {}        # deployment name -> requests running
        self._remote: dict[str, tuple[float, EdgeLoad]] = {}   # model -> (when, load the servers reported)
        self._probes: dict[tuple, asyncio.Task] = {}
        self._litellm_warm = False

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    def get(self, model: ModelSpec, deployment: Deployment) -> Provider:
        if model.client == "embedded":
            provider = self._embedded.get(model.name)
            if provider is None:
                provider = self._embedded[model.name] = _make_embedded(model)
            return provider
        key = orjson.dumps([model.client, deployment.params], option=orjson.OPT_SORT_KEYS)
        provider = self._by_key.get(key)
        if provider is None:
            provider = self._by_key[key] = self._make(model, deployment)
        return provider

    def _make(self, model: ModelSpec, deployment: Deployment) -> Provider:
        params = deployment.params
        if model.client == "native":
            return NativeOpenAIProvider(self.session, params["api_base"], params.get("api_key"),
                                        params.get("extra_headers"), **self._caps)
        return LitellmProvider(params, **self._caps)

    def edge_load(self, policy: Policy, name: str) -> EdgeLoad | None:
        """Load of an edge model: the embedded model's own report, else in-flight counts."""
        model = policy.models.get(name)
        if model is None:
            return None
        if model.client == "embedded":
            provider = self._embedded.get(name)
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
        """Load embedded models up front so the first request does not pay for it; start load probes."""
        self.sync_probes(policy)
        await self.warm_up(policy)
        for model in policy.models.values():
            if model.client == "embedded" and model.available:  # unavailable: not installed here
                provider = self.get(model, model.deployments[0])
                start = getattr(provider, "start", None)
                if start is not None:
                    await start()
        # What was loaded so far (litellm's tables above all) lives as long as the process: leave it out
        # of the collector's full passes, which otherwise stall the event loop for hundreds of ms each.
        gc.collect()
        gc.freeze()

    async def warm_up(self, policy: Policy) -> None:
        """Warm litellm once, the first time a policy names a litellm model: at start (before ready) or when
        a reload brings one in, so that no client request pays for litellm's import and lazy set-up."""
        if self._litellm_warm or not any(m.client == "litellm" for m in policy.models.values()):
            return
        self._litellm_warm = True
        from gateway.providers.litellm_client import warm_up

        started = time.monotonic()
        try:
            await warm_up()
        except Exception:  # noqa: BLE001 - a failed warm-up costs the first request time, nothing more
            logging.getLogger("gateway.providers").exception("litellm warm-up failed")
        logging.getLogger("gateway.providers").info("litellm warmed up in %.1fs", time.monotonic() - started)

    async def aclose(self) -> None:
        for task in self._probes.values():
            task.cancel()
        for provider in list(self._by_key.values()) + list(self._embedded.values()):
            await provider.aclose()
        if self._session is not None:
            await self._session.close()


def _make_embedded(model: ModelSpec) -> Provider:
    from gateway.providers.embedded import EmbeddedProvider

    options = model.embedded
    path = options.get("gguf", "default")
    return EmbeddedProvider(
        None if path == "default" else path,
        alias=options.get("alias", model.name),
        n_ctx=options.get("n_ctx", 2048),
        n_threads=options.get("threads", 1),
        max_queue=options.get("max_queue", 8),
        max_tokens_default=options.get("max_tokens", 256),
    )
