"""Personal-data scan time on normal and hostile text, 10 kB and 1 MB: CPU time of one detect() call.

    python3 bench/bench_pii.py            # best of 3 per row
    python3 bench/bench_pii.py --old REV  # also time gateway/routing/pii.py as of git revision REV
                                          # (hostile rows at 10 kB only: the old patterns can take hours)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", metavar="REV", help="also time the detector of this git revision")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
