"""Personal-data scan time on normal and hostile text, 10 kB and 1 MB: CPU time of one detect() call.

    python3 bench/bench_pii.py            # best of 3 per row
    python3 bench/bench_pii.py --old REV  # also time gateway/routing/pii.py as of git revision REV
                                          # (hostile rows at 10 kB only: the old patterns can take hours)
    python bench/bench_pii.py --healthz   # /healthz latency while the gateway (with a pii route) takes
                                          # multi-MB hostile prompts; needs the dev install (httpx, the
                                          # test fixtures' mock upstream)
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.routing.pii import RegexPiiDetector  # noqa: E402 - after the path set-up

NORMAL = ("Hi team, the Q3 report is attached. Revenue grew 12.5% to 1,234,000 EUR; see page 7. "
          "Ping me on Slack or at the usual address if anything is unclear.\n")
PERSONAL = "Please refund jane.doe@example.org, card 4111 1111 1111 1111, phone +44 20 7946 0958.\n"
HOSTILE = {
    "letters then @": lambda n: "a" * (n - 1) + "@",
    "digits spaced": lambda n: "1 " * (n // 2),
    "3-digit groups": lambda n: "111 " * (n // 4),
    "+00( repeated": lambda n: "+00(" * (n // 4),
    "IBAN starts": lambda n: "de12 " * (n // 5),
    "NINO shapes": lambda n: "AB 12 34 56 " * (n // 12),
}


def texts(n: int) -> dict[str, str]:
    rows = {"normal prose": (NORMAL * (n // len(NORMAL) + 1))[:n],
            "prose + personal data at the end": (NORMAL * (n // len(NORMAL)))[: n - len(PERSONAL)] + PERSONAL}
    rows.update({name: make(n) for name, make in HOSTILE.items()})
    return rows


def cpu_ms(detect, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        detect(text)
        best = min(best, time.process_time() - started)
    return best * 1000


def old_detector(rev: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:gateway/routing/pii.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_pii.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_pii", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RegexPiiDetector()


HEALTHZ_POLICY = """
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-a: {{tier: cloud, litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: t}}}}
classifier: {{kind: length}}
routes:
  - {{name: private, when: {{pii: true}}, targets: [edge-a], edge_only: true}}
  - {{name: auto, when: {{model: auto}}, targets: [cloud-a]}}
retry: {{attempts: 1}}
"""


def healthz() -> None:
    import threading

    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import Gateway, MockUpstream

    def probe(gw, busy) -> list[float]:
        latencies = []
        while busy():
            started = time.monotonic()
            httpx.get(gw.base + "/healthz", timeout=30)
            latencies.append((time.monotonic() - started) * 1000)
            time.sleep(0.01)
        return sorted(latencies)

    mock = MockUpstream()
    gw = Gateway(HEALTHZ_POLICY.format(url=mock.url), Path(tempfile.mkdtemp()))
    try:
        idle = iter(range(30))
        lat = probe(gw, lambda: next(idle, None) is not None)
        print("| prompt | request (s) | /healthz p50 (ms) | /healthz max (ms) |\n|---|---:|---:|---:|")
        print(f"| none (idle) | - | {lat[len(lat) // 2]:.0f} | {lat[-1]:.0f} |")
        for name, text in {"2.6 MB mixed hostile": "1 " * 400_000 + "de12 " * 150_000 + "a" * 1_000_000 + "@",
                           "4 MB digits spaced": "1 " * 2_000_000,
                           "4 MB prose": NORMAL * (4_000_000 // len(NORMAL))}.items():
            result = {}

            def send(text=text, result=result):
                started = time.monotonic()
                httpx.post(gw.base + "/v1/chat/completions", timeout=300, json={
                    "model": "auto", "messages": [{"role": "user", "content": text}]}).raise_for_status()
                result["seconds"] = time.monotonic() - started

            thread = threading.Thread(target=send)
            thread.start()
            lat = probe(gw, thread.is_alive)
            thread.join()
            print(f"| {name} | {result['seconds']:.2f} | {lat[len(lat) // 2]:.0f} | {lat[-1]:.0f} |", flush=True)
    finally:
        gw.stop()
        mock.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", metavar="REV", help="also time the detector of this git revision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--healthz", action="store_true", help="measure /healthz during large prompts instead")
    args = parser.parse_args()
    if args.healthz:
        healthz()
        return
    new = RegexPiiDetector().detect
    old = old_detector(args.old).detect if args.old else None
    header = f"| text | 10 kB (ms) | 1 MB (ms) |{' old, 10 kB (ms) |' if old else ''}"
    print(header)
    print("|---|---:|---:|" + ("---:|" if old else ""))
    small, large = texts(10_000), texts(1_000_000)
    for name in small:
        row = f"| {name} | {cpu_ms(new, small[name], args.repeats):.2f} | {cpu_ms(new, large[name], args.repeats):.0f} |"
        if old:
            row += f" {cpu_ms(old, small[name], 1):.1f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
