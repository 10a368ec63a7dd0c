#!/usr/bin/env python3
"""Tables from a `py-spy record --format raw` profile (collapsed stacks: `frame;frame;... count`).

    python bench/pyspy_report.py prof.txt --filter gateway/,starlette,uvicorn,aiohttp --top 15
    python bench/pyspy_report.py prof.txt --attribute --top 25

Default: the top frames by self time and by inclusive time, optionally only frames whose text holds one of
the --filter substrings. --attribute: every busy sample charged to the innermost frame of the gateway's own
code (that function plus the library code it calls directly), or to the framework when no own frame is on
the stack. Idle samples (threads waiting in select/queues) are left out of both.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

IDLE = ("select (selectors", "_worker (concurrent/futures/thread.py", "wait (threading.py", "thread.py:8")
LINE = re.compile(r":\d+\)$")


def read(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit():
                continue
            frames = [LINE.sub(")", fr) for fr in stack.split(";")]
            if any(s in frames[-1] for s in IDLE):
                continue
            stacks.append((frames, int(n)))
    return stacks


def is_own(frame: str) -> bool:
    return "gateway/" in frame and "gateway/cli.py" not in frame and "gateway/__main__.py" not in frame


def top_tables(stacks: list[tuple[list[str], int]], filters: list[str], top: int) -> str:
    busy = sum(n for _, n in stacks)
    own_self: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        own_self[frames[-1]] += n
        for fr in set(frames):
            incl[fr] += n

    def keep(fr: str) -> bool:
        if filters == ["own"]:
            return is_own(fr)
        return not filters or any(f in fr for f in filters)

    out = [f"busy samples: {busy}", "", "self %   frame"]
    out += [f"{100 * v / busy:6.1f}  {k}" for k, v in [kv for kv in own_self.most_common() if keep(kv[0])][:top]]
    out += ["", "incl %   frame"]
    out += [f"{100 * v / busy:6.1f}  {k}" for k, v in [kv for kv in incl.most_common() if keep(kv[0])][:top]]
    return "\n".join(out)


def attribute(stacks: list[tuple[list[str], int]], top: int) -> str:
    busy = sum(n for _, n in stacks)
    charged: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        own = next((fr for fr in reversed(frames) if is_own(fr)), None)
        if own is None:
            leaf = frames[-1]
            where = leaf.split(" (", 1)[1].split("/")[0] if " (" in leaf else "?"
            own = "(no own frame) " + ("event loop / IO" if "run_forever" in "".join(frames[-3:])
                                       else f"{where}: {leaf.split(' (')[0]}")
        charged[own] += n
    out = [f"busy samples: {busy}"]
    out += [f"{100 * v / busy:5.1f}%  {k}" for k, v in charged.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--filter", default="", help="comma-separated substrings a frame must hold to be listed; "
                    "`own` = the gateway's own modules only (without its CLI wrapper frames)")
    ap.add_argument("--attribute", action="store_true", help="charge samples to the innermost own frame")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    stacks = read(a.profile)
    if not stacks:
        print("no busy samples", file=sys.stderr)
        return 1
    print(attribute(stacks, a.top) if a.attribute
          else top_tables(stacks, [f for f in a.filter.split(",") if f], a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
