"""Policy validation: every error with its exact file:line, and the compiled form."""

from __future__ import annotations

import glob
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.policy import PolicyInvalid, compile_policy, load_policy

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
version: 1
models:
  edge-small:
    tier: edge
    litellm: {model: openai/small, api_base: "http://127.0.0.1:9/v1"}
  cloud-large:
    tier: cloud
    litellm: {model: openai/gpt-4o, api_key: env:TEST_KEY}
routes:
  - name: auto
    when: {model: auto}
    simple: [edge-small, cloud-large]
    complex: [cloud-large, edge-small]
"""


def errors_of(text: str, env=None) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        compile_policy(textwrap.dedent(text), "p.yaml", env if env is not None else {"TEST_KEY": "k"})
    return [str(e) for e in info.value.errors]


def test_good_policy_compiles():
    policy = compile_policy(GOOD, "p.yaml", {"TEST_KEY": "sk-secret"})
    assert list(policy.models) == ["edge-small", "cloud-large"]
    cloud = policy.models["cloud-large"]
    assert cloud.client == "native" and cloud.upstream_model == "gpt-4o"
    assert cloud.deployments[0].params["api_base"] == "https://api.openai.com/v1"
    route = policy.routes[0]
    assert route.split and route.simple == ("edge-small", "cloud-large")
    assert policy.model_names() == ["auto", "edge-small", "cloud-large"]
    assert len(policy.content_hash) == 12 and policy.version.startswith(policy.content_hash)
    assert "sk-secret" not in repr(policy.routes) and "sk-secret" not in policy.version


def test_yaml_syntax_error_has_line():
    assert errors_of("version: 1\nmodels:\n  a: [unclosed\n") == ["p.yaml:4: YAML syntax: expected ',' or ']', but got '<stream end>'"] \
        or errors_of("version: 1\nmodels:\n  a: [unclosed\n")[0].startswith("p.yaml:")


def test_yaml_syntax_error_line_exact():
    errs = errors_of("version: 1\nmodels: {\n  a: b\nroutes: x\n")
    assert len(errs) == 1 and errs[0].startswith("p.yaml:4: YAML syntax")


def test_unknown_model_reference_and_key_typo():
    errs = errors_of("""\
        models:
          edge:
            tier: edge
            litellm: {model: openai/x, api_base: "http://h/v1"}
        routes:
          - name: r
            when: {modle: auto}
            targets: [edge, edgy]
        """)
    assert errs == [
        "p.yaml:8: routes[0] (r).targets: unknown model 'edgy' (did you mean 'edge'?)",
        "p.yaml:7: unknown key 'modle' in routes[0] (r).when (did you mean 'model'?)",
    ]


def test_bad_tier_missing_litellm_and_bad_duration():
    errs = errors_of("""\
        models:
          a:
            tier: fog
            litellm: {model: openai/x, api_base: "http://h/v1"}
            timeout: soon
          b:
            tier: edge
        """)
    assert errs == [
        "p.yaml:3: models.a.tier must be edge or cloud, got 'fog'",
        "p.yaml:5: models.a.timeout: expected a duration like 200ms or 2s, got 'soon'",
        "p.yaml:6: models.b: needs `litellm` parameters (or `embedded` for the in-process model)",
    ]


def test_missing_secret_is_an_error_unless_optional():
    text = """\
        models:
          c:
            tier: cloud
            litellm: {model: openai/gpt-4o, api_key: env:NOT_SET_ANYWHERE}
        """
    assert errors_of(text, env={}) == [
        "p.yaml:2: models.c: environment variable NOT_SET_ANYWHERE is not set "
        "(set it, or mark the model `optional: true` to skip it while unset)"]
    policy = compile_policy(textwrap.dedent(text).replace("tier: cloud", "tier: cloud\n    optional: true"), "p.yaml", {})
    assert not policy.models["c"].available
    assert "NOT_SET_ANYWHERE" in policy.models["c"].unavailable_reason


def test_bad_regex_is_reported():
    errs = errors_of("""\
        models:
          e: {tier: edge, litellm: {model: openai/x, api_base: "http://h/v1"}}
        routes:
          - name: code
            when: {last_user: "def (["}
            targets: [e]
        """)
    assert len(errs) == 1
    assert errs[0].startswith("p.yaml:5: routes[0] (code).when.last_user: regular expression does not compile")


def test_edge_only_route_cannot_reach_cloud_even_through_fallbacks():
    errs = errors_of("""\
        models:
          e:
            tier: edge
            litellm: {model: openai/x, api_base: "http://h/v1"}
            fallbacks: [c]
          c: {tier: cloud, litellm: {model: openai/gpt-4o, api_key: env:TEST_KEY}}
        routes:
          - name: private
            when: {pii: true}
            targets: [e]
            edge_only: true
        """)
    assert errs == ["p.yaml:11: routes[0] (private): edge_only route can reach cloud model 'c' in targets "
                    "(through the fallbacks of 'e')"]


def test_split_route_needs_both_chains_and_types_are_checked():
    errs = errors_of("""\
        models:
          e: {tier: edge, litellm: {model: openai/x, api_base: "http://h/v1"}}
        classifier: {threshold: 2}
        routes:
          - name: r
            simple: [e]
            retry: {attempts: "two"}
        """)
    assert errs == [
        "p.yaml:3: classifier.threshold must be between 0.0 and 1.0, got 2",
        "p.yaml:5: routes[0] (r): `simple` and `complex` go together",
        "p.yaml:7: routes[0] (r).retry.attempts must be an integer, got a string",
    ]


def test_duplicate_keys_and_route_names():
    errs = errors_of("models:\n  a: {tier: edge}\n  a: {tier: cloud}\n")
    assert errs == ["p.yaml:3: YAML syntax: duplicate key 'a'"]
    errs = errors_of("""\
        models:
          e: {tier: edge, litellm: {model: openai/x, api_base: "http://h/v1"}}
        routes:
          - {name: r, targets: [e]}
          - {name: r, targets: [e]}
        """)
    assert errs == ["p.yaml:5: route name 'r' is already used on line 4"]


def test_empty_and_non_mapping_policies():
    assert errors_of("") == ["p.yaml:1: the policy file is empty"]
    assert errors_of("- a\n- b\n") == ["p.yaml:1: the policy must be a mapping at the top level"]


def test_missing_file(tmp_path):
    with pytest.raises(PolicyInvalid) as info:
        load_policy(str(tmp_path / "none.yaml"))
    assert str(info.value).startswith(f"{tmp_path / 'none.yaml'}:1: cannot read the policy file")


def test_policy_check_cli_prints_file_line_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  e:\n    tier: edge\n    litellm: {model: openai/x, api_base: 'http://h/v1'}\n"
                   "routes:\n  - name: r\n    targets: [nope]\n")
    run = subprocess.run([sys.executable, "-m", "gateway", "policy", "check", str(bad)], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 1
    assert run.stdout.strip() == f"{bad}:7: routes[0] (r).targets: unknown model 'nope'"


def test_shipped_policies_all_pass_check():
    files = sorted(glob.glob(str(ROOT / "policies" / "*.yaml")))
    assert files
    run = subprocess.run([sys.executable, "-m", "gateway", "policy", "check", *files], capture_output=True,
                         text=True, cwd=ROOT, env={**__import__("os").environ, "BENCH_UPSTREAM_URL": "http://127.0.0.1:1/v1"})
    assert run.returncode == 0, run.stdout + run.stderr


def test_optional_model_keeps_deployments_whose_secrets_are_set():
    policy = compile_policy(textwrap.dedent("""\
        models:
          c:
            tier: cloud
            optional: true
            litellm: {model: openai/gpt-4o}
            deployments:
              - {name: k1, api_key: env:KEY_ONE}
              - {name: k2, api_key: env:KEY_TWO}
        """), "p.yaml", {"KEY_ONE": "a"})
    model = policy.models["c"]
    assert model.available and [d.name for d in model.deployments] == ["k1"]
    policy = compile_policy(textwrap.dedent("""\
        models:
          c: {tier: cloud, optional: true, litellm: {model: openai/x, api_base: "env:NO_BASE_HERE:-http://d/v1"}}
        """), "p.yaml", {})
    assert policy.models["c"].deployments[0].params["api_base"] == "http://d/v1"


def test_serve_refuses_to_start_with_a_broken_classifier_model(tmp_path):
    broken = tmp_path / "classifier.onnx"
    broken.write_bytes(b"not an onnx model")
    env = {**__import__("os").environ, "GATEWAY_CLASSIFIER_MODEL": str(broken), "GATEWAY_PORT": "1"}
    run = subprocess.run([sys.executable, "-m", "gateway", "serve", "--policy", str(ROOT / "policies" / "bench.yaml")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert run.returncode == 1
    assert "the complexity classifier did not load" in run.stderr


def test_serve_refuses_a_bad_policy_with_file_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  e: {tier: sky}\n")
    run = subprocess.run([sys.executable, "-m", "gateway", "serve", "--policy", str(bad)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 1
    assert f"{bad}:2: models.e.tier must be edge or cloud" in run.stderr


ANTHROPIC = """\
version: 1
models:
  claude:
    tier: cloud
    litellm: {model: anthropic/claude-3-5-haiku-20241022, api_key: env:ANTHROPIC_API_KEY}
  claude-own:
    tier: cloud
    litellm: {model: anthropic/claude-3-5-haiku-20241022, api_key: k, api_base: "http://127.0.0.1:9",
              anthropic_version: "2024-01-01"}
  claude-litellm:
    tier: cloud
    client: litellm
    litellm: {model: anthropic/claude-3-5-haiku-20241022, api_key: env:ANTHROPIC_API_KEY}
routes:
  - {name: auto, when: {model: auto}, targets: [claude, claude-own, claude-litellm]}
"""


def test_anthropic_ids_get_the_native_anthropic_client_by_default():
    policy = compile_policy(ANTHROPIC, "p.yaml", {"ANTHROPIC_API_KEY": "sk-ant"})
    claude, own, via = (policy.models[n] for n in ("claude", "claude-own", "claude-litellm"))
    assert (claude.client, claude.dialect, claude.upstream_model) == (
        "anthropic", "anthropic", "claude-3-5-haiku-20241022")
    assert claude.deployments[0].params == {"model": "anthropic/claude-3-5-haiku-20241022", "api_key": "sk-ant",
                                            "api_base": "https://api.anthropic.com",
                                            "anthropic_version": "2023-06-01"}
    assert own.deployments[0].params["api_base"] == "http://127.0.0.1:9"
    assert own.deployments[0].params["anthropic_version"] == "2024-01-01"
    # `client: litellm` keeps litellm: the full id, the parameters as written, OpenAI chunks out
    assert (via.client, via.dialect, via.upstream_model) == ("litellm", "openai", "anthropic/claude-3-5-haiku-20241022")
    assert via.deployments[0].params == {"model": "anthropic/claude-3-5-haiku-20241022", "api_key": "sk-ant"}
    assert policy.models["claude"].dialect != compile_policy(GOOD, "p.yaml", {"TEST_KEY": "k"}).models[
        "cloud-large"].dialect


def test_anthropic_client_errors_with_lines():
    errs = errors_of("""\
        models:
          wrong-id:
            tier: cloud
            client: anthropic
            litellm: {model: openai/gpt-4o, api_key: k}
          no-key:
            tier: cloud
            litellm: {model: anthropic/claude-3-5-haiku-20241022}
          unset:
            tier: cloud
            client: anthropic
            litellm: {model: anthropic/claude-3-5-haiku-20241022, api_key: env:NOT_SET_ANTHROPIC}
          embeds:
            tier: cloud
            kind: embedding
            client: anthropic
            litellm: {model: anthropic/claude-3-5-haiku-20241022, api_key: k}
          typo:
            tier: cloud
            client: antropic
            litellm: {model: anthropic/claude-3-5-haiku-20241022, api_key: k}
        routes:
          - {name: r, when: {model: auto}, targets: [no-key]}
        """)
    assert errs == [
        "p.yaml:4: models.wrong-id: the anthropic client speaks the Anthropic Messages API only; use a model id "
        "starting with anthropic/",
        "p.yaml:6: models.no-key: anthropic models need litellm.api_key (e.g. env:ANTHROPIC_API_KEY)",
        "p.yaml:9: models.unset: environment variable NOT_SET_ANTHROPIC is not set (set it, or mark the model "
        "`optional: true` to skip it while unset)",
        "p.yaml:16: models.embeds: the anthropic client cannot serve embeddings",
        "p.yaml:20: models.typo.client must be auto, native, anthropic or litellm",
    ]


def test_embedding_models_with_anthropic_ids_stay_on_litellm():
    policy = compile_policy("""\
models:
  chat: {tier: edge, litellm: {model: openai/x, api_base: "http://127.0.0.1:9/v1"}}
  vectors: {tier: cloud, kind: embedding, litellm: {model: anthropic/some-embedder, api_key: k}}
routes:
  - {name: r, when: {model: auto}, targets: [chat]}
""", "p.yaml", {})
    assert (policy.models["vectors"].client, policy.models["vectors"].dialect) == ("litellm", "openai")
    assert (policy.models["chat"].client, policy.models["chat"].dialect) == ("native", "openai")


def test_parameters_the_native_client_ignores_are_a_warning():
    from gateway.policy.lint import policy_warnings

    policy = compile_policy("""\
models:
  edge:
    tier: edge
    litellm: {model: openai/x, api_base: "http://127.0.0.1:9/v1", temperature: 0}
  via:
    tier: edge
    client: litellm
    litellm: {model: openai/x, api_base: "http://127.0.0.1:9/v1", temperature: 0}
  claude: {tier: cloud, litellm: {model: anthropic/claude-x, api_key: k, temperature: 0}}
routes:
  - {name: r, when: {model: auto}, targets: [edge, via, claude]}
""", "p.yaml", {})
    assert [str(w) for w in policy_warnings(policy)] == [
        "p.yaml:2: warning: models.edge: the native client does not read temperature (it reads model, api_base, "
        "api_key, extra_headers); write `client: litellm` to hand every parameter to litellm"]
    assert policy_warnings(compile_policy(GOOD, "p.yaml", {"TEST_KEY": "k"})) == []
