"""The `gateway` command: serve, policy check|explain|diff, classify, train, eval."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from gateway.settings import Settings


def _serve(args) -> int:
    import uvicorn

    from gateway.observability.logs import setup_logging
    from gateway.policy import PolicyInvalid, load_policy

    settings = Settings.from_env(policy=args.policy, host=args.host, port=args.port, workers=args.workers,
                                 ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                                 redis_url=args.redis_url)
    setup_logging(settings.log_level)
    try:
        policy = load_policy(settings.policy)  # fail fast, with file:line, before any worker starts
    except PolicyInvalid as exc:
        print(f"gateway: the policy is not valid:\n{exc}", file=sys.stderr)
        return 1
    for model in policy.models.values():
        if not model.available:  # today only an in-process model can be missing (not installed here)
            print(f"gateway: warning: the model '{model.name}' cannot run: {model.unavailable_reason}. "
                  "Its requests go to the route's other targets, else get the policy's canned reply.",
                  file=sys.stderr)
    from gateway.classify import ClassifierLoadError, load_scorer

    try:
        load_scorer("onnx", settings.classifier_model or None)
    except ClassifierLoadError as exc:
        print(f"gateway: cannot start: the complexity classifier did not load: {exc}", file=sys.stderr)
        return 1
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    # Workers re-read settings from the environment: pass the flags on that way.
    for name in ("policy", "host", "port", "workers", "redis_url", "ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, name)
        if value not in ("", None):
            os.environ[f"GATEWAY_{name.upper()}"] = str(value)
    uvicorn.run(
        "gateway.app:create_app", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers if settings.workers > 1 else None, loop="uvloop", http="httptools",
        access_log=False, log_level="warning", lifespan="on", timeout_graceful_shutdown=10,
        ssl_certfile=settings.ssl_certfile or None, ssl_keyfile=settings.ssl_keyfile or None,
    )
    return 0


def _policy_check(args) -> int:
    from gateway.policy import PolicyInvalid, load_policy
    from gateway.policy.lint import policy_warnings

    failed = False
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyInvalid as exc:
            failed = True
            for error in exc.errors:
                print(error)
        else:
            print(f"{path}: ok ({len(policy.models)} models, {len(policy.routes)} routes, version {policy.content_hash})")
            for warning in policy_warnings(policy):
                print(warning)
    return 1 if failed else 0


def _inputs(policy_paths: list[str], requests_path: str) -> tuple[list, list[dict]]:
    """The compiled policies and the request bodies; exits 1 (bad policy) or 2 (unreadable requests)."""
    from gateway.policy import PolicyInvalid, load_policy
    from gateway.routing.traffic import TrafficError, read_requests

    try:
        policies = [load_policy(path) for path in policy_paths]
    except PolicyInvalid as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    try:
        return policies, read_requests(requests_path)
    except TrafficError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def _offline_router():
    from gateway.classify import load_scorer
    from gateway.routing.router import Router

    class _Direct:
        def __init__(self, scorer):
            self.scorer = scorer
            self.default_threshold = scorer.default_threshold

        async def score(self, text):
            return self.scorer.score_batch([text])[0]

        def threshold_for_share(self, share):
            return self.scorer.threshold_for_share(share)

    kinds = {}

    def scoring(kind):
        if kind not in kinds:
            kinds[kind] = _Direct(load_scorer(kind))
        return kinds[kind]

    return Router(scoring)


def _policy_explain(args) -> int:
    import orjson

    from gateway.api.admin import explain_request
    from gateway.errors import ApiError

    (policy,), requests = _inputs([args.policy], args.request)
    router = _offline_router()
    status = 0
    for body in requests:
        try:
            result = asyncio.run(explain_request(router, policy, body))
        except ApiError as exc:
            result, status = {"error": exc.message}, 2
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return status


def _policy_diff(args) -> int:
    from gateway.routing.diff import diff_policies, format_diff

    (old, new), requests = _inputs([args.old, args.new], args.requests)
    report = asyncio.run(diff_policies(_offline_router(), old, new, requests))
    print(format_diff(report, examples=args.examples))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Hybrid edge-cloud LLM routing gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (uvicorn, uvloop, httptools)")
    serve.add_argument("--policy", help="policy file (env GATEWAY_POLICY, default policies/default.yaml)")
    serve.add_argument("--host", help="bind address (env GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env GATEWAY_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (env GATEWAY_WORKERS, default 1)")
    serve.add_argument("--redis-url", help="shared state for several replicas (env GATEWAY_REDIS_URL)")
    serve.add_argument("--ssl-certfile", help="TLS certificate (PEM)")
    serve.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    serve.set_defaults(func=_serve)

    policy = sub.add_parser("policy", help="check, explain or diff policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate policy files; prints file:line: message; exit 1 on errors")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=_policy_check)
    explain = psub.add_parser("explain", help="the routing decision for a request, without calling upstreams")
    explain.add_argument("--policy", required=True)
    explain.add_argument("--request", required=True, help="a JSON request body, or a JSONL of request bodies or {\"prompt\": ...} lines")
    explain.set_defaults(func=_policy_explain)
    diff = psub.add_parser("diff", help="how a new policy would route a sample of requests differently")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--requests", required=True, help="JSONL of request bodies or {\"prompt\": ...} lines")
    diff.add_argument("--examples", type=int, default=3)
    diff.set_defaults(func=_policy_diff)

    try:
        from gateway.classify.cli import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
