"""Personal-data detection: linear time on hostile input, every string of a request scanned, separators
and case normalised, unreadable parts optionally treated as personal; and the order of admission."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from conftest import ROOT, Gateway
from gateway.policy import PolicyInvalid, compile_policy
from gateway.policy.lint import policy_warnings
from gateway.policy.schema import Match
from gateway.routing.matcher import evaluate
from gateway.routing import pii
from gateway.routing.pii import MAX_CHECKS, RegexPiiDetector, iban_ok, luhn_ok
from gateway.request import Request
from gateway.routing.signals import Signals, request_strings

detector = RegexPiiDetector()
MB = 1_000_000

# -- detection quality ---------------------------------------------------------------------------------

FOUND = [
    ("write to jane.doe@example.org", "email"),
    ("WRITE TO JANE.DOE@EXAMPLE.ORG", "email"),
    ("Jane.Doe@Example.Co.Uk wrote", "email"),
    ("card 4111.1111.1111.1111 ok", "card"),
    ("card 4111/1111/1111/1111 ok", "card"),
    ("card 4111 - 1111 - 1111 - 1111 ok", "card"),
    ("card 4111_1111_1111_1111 ok", "card"),
    ("card 4111\u00a01111\u00a01111\u00a01111 ok", "card"),
    ("card 4111111111111111 ok", "card"),
    ("amex 3782 822463 10005", "card"),
    ("ref 12 then 4111 1111 1111 1111", "card"),
    ("iban de89 3704 0044 0532 0130 00 is mine", "iban"),
    ("IBAN DE89.3704.0044.0532.0130.00", "iban"),
    ("gb82west12345698765432", "iban"),
    ("send to GB82 WEST 1234 5698 7654 32 today", "iban"),
    ("call me on +44 20 7946 0958", "phone"),
    ("(555) 123-4567", "phone"),
    ("555.123.4567", "phone"),
    ("0044 20 7946 0958", "phone"),
    ("my SSN is 123-45-6789", "national_id"),
    ("NINO AB 12 34 56 C", "national_id"),
    ("nino ab123456c", "national_id"),
    ("INSEE 1 85 05 78 006 084 36", "national_id"),
    ("personnummer 811218-9876 is my id", "national_id"),
    ("カード４１１１　１１１１　１１１１　１１１１です", "card"),          # full-width, as CJK input methods type
    ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ", "email"),
    ("بطاقة ٤١١١ ١١١١ ١١١١ ١١١١", "card"),                           # Arabic-Indic digits
    ("電話 ＋４４ ２０ ７９４６ ０９５８", "phone"),
]

NOT_FOUND = [
    ("The answer is 42 and 1999 was a year.", set()),
    ("mail at example dot org", set()),
    ("a@b", set()),
    ("card 4111 1111 1111 1112 is not valid", {"phone"}),   # Luhn fails; grouped digits still look like a phone
    ("4111 1111.1111 1111", {"phone"}),                    # mixed separators: not a card
    ("iban DE88 3704 0044 0532 0130 00", {"phone"}),       # mod 97 fails
    ("811218-9876\nid", {"phone"}),                        # the keyword is on another line
    ("version 1.2.3", set()),
]


@pytest.mark.parametrize("text,kind", FOUND)
def test_each_kind_is_found(text, kind):
    assert kind in detector.detect(text)


@pytest.mark.parametrize("text,expected", NOT_FOUND)
def test_near_misses_are_not(text, expected):
    assert detector.detect(text) == expected


def test_card_numbers_are_not_also_phone_numbers():
    assert detector.detect("pay with 4111 1111 1111 1111 please") == {"card"}


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("378282246310005") and luhn_ok("0")
    assert iban_ok("de89 3704 0044 0532 0130 00") and not iban_ok("DE89 3704 0044 0532 0130 01")
    assert not iban_ok("DE89 3704 ÄÖ44 0532 0130 00") and not iban_ok("DE89")


def test_too_many_candidates_count_as_found():
    """Beyond MAX_CHECKS candidates a kind cannot be cleared in bounded time, so it counts as present."""
    fake_cards = " x ".join("4111 1111 1111 1112" for _ in range(MAX_CHECKS + 10))
    assert "card" in detector.detect(fake_cards)
    assert "card" not in detector.detect(" x ".join("4111 1111 1111 1112" for _ in range(50)))


def test_scanning_in_slices_finds_the_same(monkeypatch):
    """Regex calls run over slices of the text (each call short); a tiny slice must change no result."""
    rnd = random.Random(13)
    pieces = ["4111 1111 1111 1111", "4111.1111.1111.1111", "de89 3704 0044 0532 0130 00", "jane@example.org",
              "+44 20 7946 0958", "(555) 123-4567", "123-45-6789", "AB 12 34 56 C", "1 85 05 78 006 084 36",
              "811218-9876", "id", "ssn", "\n", " ", "-", ".", "x", "7", "12", "A", "@", "(", "+", "00"]
    texts = ["".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 30))) for _ in range(3000)]
    whole = [detector.detect(t) for t in texts]
    monkeypatch.setattr(pii, "_SLICE", 5)
    assert [detector.detect(t) for t in texts] == whole


# -- linear time on hostile input ------------------------------------------------------------------------

# Each entry is an expression for about 1 MB of text aimed at one pattern (backtracking, long runs, many
# candidates). The scans run in a child process, so a regression to quadratic time fails within the
# timeout instead of hanging the suite.
ADVERSARIAL = {
    "email: letters then @": "'a' * MB + '@'",
    "email: many @": "'a@' * (MB // 2)",
    "email: long dotted domain": "'x@' + 'a.' * (MB // 2)",
    "email: dotted local parts": "('a.' * 50 + '@') * (MB // 101)",
    "card: one long digit run": "'1' * MB",
    "card: single digits spaced": "'1 ' * (MB // 2)",
    "card: 3-digit groups": "'111 ' * (MB // 4)",
    "card: 4-digit groups, dots": "'4111.' * (MB // 5)",
    "card: separators runs": "'1 - ' * (MB // 4)",
    "phone: repeated +00(": "'+00(' * (MB // 4)",
    "phone: groups just short": "'1 1 1 1 1 1 x ' * (MB // 14)",
    "phone: long groups": "'1234567890123456 ' * (MB // 17)",
    "phone: parentheses": "'(1)(2)(3)' * (MB // 9)",
    "iban: letters then a start": "'A' * MB + 'DE89'",
    "iban: starts everywhere": "'DE12 ' * (MB // 5)",
    "iban: lower-case starts": "'de12 ' * (MB // 5)",
    "iban: long alnum run": "'DE89' + 'A1' * (MB // 2)",
    "national id: NINO shapes": "'AB 12 34 56 ' * (MB // 12)",
    "national id: SSN shapes": "'123-45-678 ' * (MB // 11)",
    "national id: INSEE shapes": "'1 85 05 78 006 084 ' * (MB // 19)",
    "national id: personnummer, keyword at the end": "'811218-9876 ' * (MB // 12) + 'id'",
    "national id: personnummer, keyword lines": "('811218-9876 ' * 1000 + chr(10)) * (MB // 12001) + 'id'",
    "non-ASCII digits": "'\u0664\u0661 ' * (MB // 3)",
    "full-width and expanding characters": "('\uff14\uff11\uff11\uff11 \ufdfa ') * (MB // 7)",
    "mixed prose": "'Hello jane, call 555-0100 or pay 4111 1111 with DE89 ref 12.5% id ' * (MB // 66)",
}
LIMIT_S = 2.0   # CPU seconds for 1 MB: a guard against super-linear blowup, not a benchmark

_CHILD = """
import json, sys, time
from gateway.routing.pii import RegexPiiDetector
MB = 1_000_000
d = RegexPiiDetector()
out = {}
for name, expr in json.loads(sys.argv[1]).items():
    text = eval(expr)
    t0 = time.process_time()
    d.detect(text)
    out[name] = [len(text), time.process_time() - t0]
    print(json.dumps({name: out[name]}), flush=True)
"""


def test_every_pattern_is_linear_on_adversarial_input():
    try:
        run = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(ADVERSARIAL)], capture_output=True,
                             text=True, cwd=ROOT, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        done = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"scanning hostile input did not finish in 120 s; finished so far:\n{done}")
    assert run.returncode == 0, run.stderr
    results = {}
    for line in run.stdout.splitlines():
        results.update(json.loads(line))
    assert set(results) == set(ADVERSARIAL)
    slow = {name: f"{seconds:.2f}s for {size} chars" for name, (size, seconds) in results.items()
            if size < 0.9 * MB or seconds > LIMIT_S}
    assert not slow, slow


# -- every string of a request -----------------------------------------------------------------------------

def test_request_strings_reach_every_field_but_names_and_ids():
    body = {
        "model": "jane@example.org-model",
        "messages": [
            {"role": "user", "name": "n-name", "content": [{"type": "text", "text": "t-text"},
                                                            {"type": "refusal", "refusal": "t-refusal"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_id", "type": "function", "function": {"name": "f-name", "arguments": "{\"a\": \"t-args\"}"}}]},
            {"role": "tool", "tool_call_id": "call_id", "content": "t-tool"},
        ],
        "tools": [{"type": "function", "function": {"name": "tool-name", "description": "t-desc",
                                                    "parameters": {"properties": {"p": {"description": "t-param"}}}}}],
        "user": "t-user", "metadata": {"k-meta": "t-meta"}, "prediction": {"type": "content", "content": "t-pred"},
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "description": "t-schema"}},
    }
    strings, unscannable = request_strings(body)
    for expected in ("n-name", "t-text", "t-refusal", "f-name", "t-args", "t-tool", "tool-name", "t-desc",
                     "t-param", "t-user", "k-meta", "t-meta", "t-pred", "t-schema"):
        assert any(expected in s for s in strings), expected
    assert "jane@example.org-model" not in strings and "call_id" not in strings
    assert unscannable == set()


def test_request_strings_name_unreadable_parts_and_skip_their_payload():
    body = {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
        {"type": "input_audio", "input_audio": {"data": "QUJD", "format": "wav"}},
        {"type": "file", "file": {"file_data": "QUJD", "filename": "jane@example.org.pdf"}},
    ]}]}
    strings, unscannable = request_strings(body)
    assert unscannable == {"image", "audio", "file"}
    assert "QUJD" not in strings and not any(s.startswith("data:") for s in strings)
    assert "jane@example.org.pdf" in strings


def test_deep_nesting_does_not_recurse():
    deep: dict = {"v": "jane@example.org"}
    for _ in range(50_000):
        deep = {"x": deep}
    strings, _ = request_strings({"model": "auto", "messages": [], "metadata": deep})
    assert "jane@example.org" in strings


# -- the policy: fail closed and the shadowing warning -------------------------------------------------------

MODELS = """version: 1
models:
  edge-a: {tier: edge, litellm: {model: openai/edge-a, api_base: "http://127.0.0.1:9/v1", api_key: t}}
  cloud-a: {tier: cloud, litellm: {model: openai/cloud-a, api_base: "http://127.0.0.1:9/v1", api_key: t}}
"""


def test_unreadable_parts_in_every_kind_of_pii_condition():
    body = {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "no personal data here"},
        {"type": "input_audio", "input_audio": {"data": "QUJD", "format": "wav"}}]}]}
    signals = Signals(Request(body, b"", "auto", False, body["messages"]), detector)
    assert signals.pii == set() and signals.unscannable == {"audio"}
    for match, expected in ((Match(pii=True), False), (Match(pii=True, pii_unscannable=True), True),
                            (Match(pii=False, pii_unscannable=True), False), (Match(pii=False), True),
                            (Match(pii_kinds=("card",), pii_unscannable=True), True),
                            (Match(none=(Match(pii=True, pii_unscannable=True),)), False)):
        why: list[str] = []
        assert evaluate(match, signals, why) is expected, (match, why)
    why = []
    evaluate(Match(pii=True, pii_unscannable=True), signals, why)
    assert why == ["pii=unscannable ['audio']"]


def test_unscannable_is_validated():
    with pytest.raises(PolicyInvalid, match="unscannable must be personal or ignore"):
        compile_policy(MODELS + "routes:\n  - {name: p, when: {pii: true}, targets: [edge-a], unscannable: maybe}\n")
    with pytest.raises(PolicyInvalid, match="applies to the pii conditions"):
        compile_policy(MODELS + "routes:\n  - {name: p, when: {model: auto}, targets: [edge-a], unscannable: personal}\n")
    policy = compile_policy(MODELS + "routes:\n  - {name: p, when: {any: [{pii: [card]}, {model: x}]}, "
                                     "targets: [edge-a], unscannable: personal}\n")
    assert policy.routes[0].when.any[0].pii_unscannable and not policy.routes[0].when.any[1].pii_unscannable


SHADOWED = MODELS + """routes:
  - name: everything
    targets: [cloud-a]
  - name: auto
    when: {model: auto}
    targets: [cloud-a]
  - name: other-model
    when: {model: [gpt-4o]}
    targets: [cloud-a]
  - name: clean
    when: {pii: false}
    targets: [cloud-a]
  - name: local
    when: {model: auto}
    targets: [edge-a]
    edge_only: true
  - name: private
    when: {pii: true, model: auto}
    targets: [edge-a]
    edge_only: true
"""


def test_policy_check_warns_about_routes_before_a_pii_route(tmp_path):
    warnings = [str(w) for w in policy_warnings(compile_policy(SHADOWED, "p.yaml"))]
    assert len(warnings) == 2, warnings
    assert all(w.startswith("p.yaml:21: warning: route 'private'") for w in warnings)
    assert "'everything' (line 6)" in warnings[0] and "'auto' (line 8)" in warnings[1]
    path = tmp_path / "shadowed.yaml"
    path.write_text(SHADOWED)
    run = subprocess.run([sys.executable, "-m", "gateway", "policy", "check", str(path)], capture_output=True,
                         text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].endswith("ok (2 models, 6 routes, version " + lines[0].rsplit(" ", 1)[1])
    assert [line.split(": warning")[0] for line in lines[1:]] == [f"{path}:21", f"{path}:21"]
    fixed = SHADOWED.replace("  - name: everything\n    targets: [cloud-a]\n", "")
    assert policy_warnings(compile_policy(fixed.replace("  - name: auto\n    when: {model: auto}\n"
                                                        "    targets: [cloud-a]\n", ""))) == []


# -- through the real gateway ------------------------------------------------------------------------------

KEY = "sk-pii-test-key-8c1f"
POLICY = """
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-a: {{tier: cloud, litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length}}
auth:
  required: true
  keys:
    - {{name: team, sha256: {digest}, rpm: 1000}}
    - {{name: slow, sha256: {slow}, rpm: 1}}
routes:
  - name: strict
    when: {{pii: true, header: {{x-strict: "1"}}}}
    targets: [edge-a]
    edge_only: true
    unscannable: personal
  - name: private
    when: {{pii: true}}
    targets: [edge-a]
    edge_only: true
  - name: auto
    when: {{model: auto}}
    targets: [cloud-a]
retry: {{attempts: 1}}
"""
SLOW_KEY = "sk-pii-test-slow-27d4"


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url, digest=hashlib.sha256(KEY.encode()).hexdigest(),
                                    slow=hashlib.sha256(SLOW_KEY.encode()).hexdigest()), tmp_module)
    yield gateway
    gateway.stop()


def chat(gw, body: dict, key: str = KEY, headers: dict | None = None, timeout: float = 30) -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", **body}, timeout=timeout,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def _user(text):
    return [{"role": "user", "content": text}]


HIDDEN = {
    "tool call arguments": {"messages": [
        {"role": "user", "content": "book it"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "book", "arguments": "{\"email\": \"jane.doe@example.org\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]},
    "message name": {"messages": [{"role": "user", "name": "jane.doe@example.org", "content": "hello"}]},
    "refusal part": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "refusal", "refusal": "I will not charge 4111 1111 1111 1111"}]},
        {"role": "user", "content": "ok"}]},
    "tools description": {"messages": _user("hi"), "tools": [{"type": "function", "function": {
        "name": "pay", "description": "Charges card 4111-1111-1111-1111", "parameters": {"type": "object"}}}]},
    "user field": {"messages": _user("hi"), "user": "jane.doe@example.org"},
    "metadata": {"messages": _user("hi"), "metadata": {"customer": "+44 20 7946 0958"}},
    "response_format": {"messages": _user("hi"), "response_format": {"type": "json_schema", "json_schema": {
        "name": "out", "schema": {"type": "object", "description": "for DE89 3704 0044 0532 0130 00"}}}},
    "prediction": {"messages": _user("hi"), "prediction": {"type": "content", "content": "SSN 123-45-6789"}},
    "lower-case IBAN": {"messages": _user("pay to de89 3704 0044 0532 0130 00 today")},
    "dotted card": {"messages": _user("my card: 4111.1111.1111.1111")},
    "odd-case e-mail": {"messages": _user("JaNe.DoE@ExAmPlE.oRg")},
}


@pytest.mark.parametrize("where", list(HIDDEN))
def test_personal_data_anywhere_stays_on_the_edge(gw, mock, where):
    r = chat(gw, HIDDEN[where])
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-route"] == "private" and r.headers["x-gateway-tier"] == "edge"
    assert mock.requests("cloud-a") == [] and len(mock.requests("edge-a")) == 1


def test_clean_requests_still_go_to_the_cloud(gw, mock):
    r = chat(gw, {"messages": _user("What is 2 + 2? Reply in 1999 style."), "user": "u-42",
                  "metadata": {"ticket": "A-17"}, "tools": [{"type": "function", "function": {"name": "add"}}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-route"] == "auto" and mock.requests("edge-a") == []


def test_unreadable_parts_count_as_personal_on_a_fail_closed_route(gw, mock):
    image = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}
    r = chat(gw, image, headers={"x-strict": "1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-route"] == "strict" and mock.requests("cloud-a") == []
    mock.reset()
    r = chat(gw, image)  # the other routes read only what they can scan
    assert r.headers["x-gateway-route"] == "auto" and mock.requests("edge-a") == []


def test_auth_and_key_limits_come_before_routing(gw, mock):
    # No key: 401 before the body is even read, whatever it holds.
    r = httpx.post(gw.base + "/v1/chat/completions", content=b"{not json", timeout=10)
    assert r.status_code == 401
    # A key over its limit gets 429 before routing looks at the request (which would say 404 here).
    assert chat(gw, {"messages": _user("hi")}, key=SLOW_KEY).status_code == 200
    r = chat(gw, {"model": "no-such-model", "messages": _user("hi")}, key=SLOW_KEY)
    assert r.status_code == 429, r.text


def test_healthz_answers_while_a_huge_hostile_prompt_is_scanned(gw, mock):
    hostile = "1 " * 400_000 + "de12 " * 150_000 + "a" * 1_000_000 + "@"  # ~2.6 MB aimed at every scanner
    result: dict = {}

    def big():
        started = time.monotonic()
        result["response"] = chat(gw, {"messages": _user(hostile)}, timeout=120)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=big)
    thread.start()
    latencies = []
    while thread.is_alive():
        started = time.monotonic()
        try:
            ok = httpx.get(gw.base + "/healthz", timeout=5).status_code == 200
        except httpx.TimeoutException:
            ok = False
        latencies.append((ok, time.monotonic() - started))
        time.sleep(0.02)
    thread.join()
    assert result["response"].status_code == 200, result["response"].text
    assert result["response"].headers["x-gateway-route"] == "private"
    assert latencies and all(ok for ok, _ in latencies), latencies
    assert max(seconds for _, seconds in latencies) < 1.0, (latencies, result["seconds"])


def test_docs_example_compiles():
    text = (ROOT / "docs" / "policy.md").read_text()
    block = text.split("<!-- unscannable example -->", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    policy = compile_policy(MODELS + textwrap.dedent(block))
    assert policy.routes[0].when.pii_unscannable
