"""Container health check with python's urllib (the slim image has no curl): exit 0 when the URL answers 2xx.

URL: the first argument, else HEALTHCHECK_URL, else the gateway's own /healthz on GATEWAY_PORT (https when
GATEWAY_SSL_CERTFILE is set; the certificate is not verified, the check only asks whether the process answers).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEALTHCHECK_URL", "")
    if not url:
        scheme = "https" if os.environ.get("GATEWAY_SSL_CERTFILE") else "http"
        url = f"{scheme}://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8080')}/healthz"
    context = ssl._create_unverified_context() if url.startswith("https") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "3")),
                                    context=context) as response:
            return 0 if 200 <= response.status < 300 else 1
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
