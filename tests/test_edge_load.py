"""Remote edge-load parsers and the in-flight estimator (no model, no external server)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.providers.base import EdgeLoad
from gateway.providers.edge_load import (
    InFlightEstimator,
    parse_llamacpp_metrics,
    parse_llamacpp_slots,
    parse_prometheus,
    parse_vllm_metrics,
    poll_remote_load,
)

LLAMACPP_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 6886
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 3469
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 412.5
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 78.25
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.12
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 3
"""

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 4.0
vllm:num_requests_running{engine="1",model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 1.0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 0.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="qwen"} 123456.0
vllm:gpu_cache_usage_perc{model_name="qwen, \\"v2\\" {x}"} NaN
"""

SLOTS = [
    {"id": 0, "n_ctx": 2048, "is_processing": True,
     "next_token": [{"has_next_token": True, "n_remain": 120, "n_decoded": 8}]},
    {"id": 1, "n_ctx": 2048, "is_processing": False,
     "next_token": [{"has_next_token": False, "n_remain": -1, "n_decoded": 0}]},
]


class TestParsers:
    def test_prometheus_sums_labels_and_skips_comments_and_nan(self):
        metrics = parse_prometheus(VLLM_METRICS + "garbage line without value\nfoo 1 1700000000000\n")
        assert metrics["vllm:num_requests_running"] == 6.0
        assert metrics["vllm:num_requests_waiting"] == 1.0
        assert "vllm:gpu_cache_usage_perc" not in metrics  # NaN skipped, quoted braces parsed
        assert metrics["foo"] == 1.0  # optional timestamp

    def test_llamacpp_metrics(self):
        load = parse_llamacpp_metrics(LLAMACPP_METRICS)
        assert load == EdgeLoad(queue_depth=3, in_flight=5, tokens_per_second=78.25, expected_wait_s=0.0)

    def test_llamacpp_metrics_expected_wait(self):
        load = parse_llamacpp_metrics(LLAMACPP_METRICS, slots=2, mean_request_s=2.0)
        assert load.expected_wait_s == pytest.approx((3 + 1) * 2.0 / 2)
        idle = parse_llamacpp_metrics("llamacpp:requests_processing 1\nllamacpp:requests_deferred 0\n",
                                      slots=2, mean_request_s=2.0)
        assert idle.expected_wait_s == 0.0 and idle.in_flight == 1

    def test_llamacpp_metrics_rejects_other_text(self):
        with pytest.raises(ValueError):
            parse_llamacpp_metrics(VLLM_METRICS)

    def test_vllm_metrics(self):
        load = parse_vllm_metrics(VLLM_METRICS)
        assert (load.queue_depth, load.in_flight, load.tokens_per_second) == (1, 7, 0.0)
        assert parse_vllm_metrics(VLLM_METRICS, slots=6, mean_request_s=3.0).expected_wait_s == pytest.approx(1.0)
        old = parse_vllm_metrics("vllm:num_requests_running 1\nvllm:avg_generation_throughput_toks_per_s 55.5\n")
        assert old.tokens_per_second == 55.5 and old.queue_depth == 0
        with pytest.raises(ValueError):
            parse_vllm_metrics(LLAMACPP_METRICS)

    def test_llamacpp_slots(self):
        load = parse_llamacpp_slots(SLOTS)
        assert (load.in_flight, load.queue_depth, load.expected_wait_s) == (1, 0, 0.0)
        busy = [dict(slot, is_processing=True) for slot in SLOTS]
        busy[1]["next_token"] = [{"n_remain": 40, "n_decoded": 2}]
        full = parse_llamacpp_slots(busy, tokens_per_second=80.0)
        assert full.in_flight == 2 and full.expected_wait_s == pytest.approx(40 / 80)
        assert parse_llamacpp_slots(busy, mean_request_s=3.0).expected_wait_s == pytest.approx(1.5)

    def test_llamacpp_slots_old_state_field_and_bad_shapes(self):
        assert parse_llamacpp_slots([{"id": 0, "state": 1}, {"id": 1, "state": 0}]).in_flight == 1
        assert parse_llamacpp_slots({"slots": [{"state": 1}]}).in_flight == 1
        assert parse_llamacpp_slots([]).in_flight == 0
        for bad in ({"error": "slots disabled"}, "x", [1, 2]):
            with pytest.raises(ValueError):
                parse_llamacpp_slots(bad)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestInFlightEstimator:
    def test_counts_and_moving_average(self):
        clock = FakeClock()
        est = InFlightEstimator(slots=1, alpha=0.5, prior_request_s=4.0, clock=clock)
        assert est.load() == EdgeLoad(0, 0, 0.0, 0.0)
        a = est.start()
        assert est.in_flight == 1
        assert est.expected_wait_s() == pytest.approx(4.0)  # prior: one slot busy
        b = est.start()
        assert est.load().queue_depth == 1
        assert est.expected_wait_s() == pytest.approx(8.0)
        clock.now += 2.0
        est.finish(a, completion_tokens=101, first_token_at=clock.now - 1.0)
        assert est.mean_request_s == pytest.approx(2.0)
        assert est.tokens_per_second == pytest.approx(100.0)
        clock.now += 2.0
        est.finish(b)  # 4 s
        assert est.mean_request_s == pytest.approx(0.5 * 4.0 + 0.5 * 2.0)
        assert est.in_flight == 0 and est.completed == 2

    def test_failed_requests_only_decrement(self):
        clock = FakeClock()
        est = InFlightEstimator(prior_request_s=1.0, clock=clock)
        with pytest.raises(RuntimeError):
            with est.track():
                clock.now += 50.0
                raise RuntimeError("upstream died")
        assert est.in_flight == 0 and est.mean_request_s == 1.0 and est.completed == 0
        with est.track() as rec:
            assert est.in_flight == 1
            clock.now += 3.0
            rec.completion_tokens = 30
        assert est.mean_request_s == pytest.approx(3.0) and est.tokens_per_second == pytest.approx(10.0)
        est.finish(est.start(), record=False)
        assert est.in_flight == 0 and est.completed == 1

    def test_slots_and_remote_merge(self):
        est = InFlightEstimator(slots=2, prior_request_s=2.0)
        for _ in range(3):
            est.start()
        local = est.load()
        assert (local.in_flight, local.queue_depth, local.expected_wait_s) == (3, 1, pytest.approx(2.0))
        merged = est.load(EdgeLoad(queue_depth=4, in_flight=6, tokens_per_second=70.0, expected_wait_s=0.0))
        assert (merged.in_flight, merged.queue_depth, merged.tokens_per_second) == (6, 4, 70.0)
        assert merged.expected_wait_s == pytest.approx((6 - 2 + 1) * 2.0 / 2)
        with pytest.raises(ValueError):
            InFlightEstimator(slots=0)

    def test_never_negative(self):
        est = InFlightEstimator()
        est.finish(0.0, record=False)
        assert est.in_flight == 0


async def _serve(routes: dict) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


class TestPoll:
    async def test_llamacpp_metrics_then_slots_fallback(self):
        async def metrics(request):
            return web.Response(text=LLAMACPP_METRICS, content_type="text/plain")

        async def disabled(request):
            return web.Response(status=501, text='{"error":"This server does not support metrics endpoint."}')

        async def slots(request):
            return web.json_response(SLOTS)

        runner, url = await _serve({"/metrics": metrics, "/slots": slots})
        try:
            load = await poll_remote_load(url + "/v1", "llamacpp")
            assert (load.in_flight, load.queue_depth) == (5, 3)
        finally:
            await runner.cleanup()

        runner, url = await _serve({"/metrics": disabled, "/slots": slots})
        try:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                load = await poll_remote_load(session, "llamacpp", base_url=url)
            assert (load.in_flight, load.queue_depth) == (1, 0)
            assert await poll_remote_load(url, "vllm") is None  # 501: not exposed
        finally:
            await runner.cleanup()

    async def test_vllm_and_timeouts(self):
        async def metrics(request):
            return web.Response(text=VLLM_METRICS)

        async def slow(request):
            await asyncio.sleep(0.6)
            return web.Response(text=VLLM_METRICS)

        runner, url = await _serve({"/metrics": metrics})
        try:
            load = await poll_remote_load(url, "vllm")
            assert load.in_flight == 7
        finally:
            await runner.cleanup()
        runner, url = await _serve({"/metrics": slow})
        try:
            assert await poll_remote_load(url, "vllm", timeout=0.2) is None
        finally:
            await runner.cleanup()
        assert await poll_remote_load("http://127.0.0.1:9", "llamacpp", timeout=0.5) is None  # nothing there
        with pytest.raises(ValueError):
            await poll_remote_load(url, "triton")
