"""The demo's users: clients of the first-level endpoints, so a new version serves real requests
there and its promotion to production has evidence (each endpoint's own /metrics).

    python -m demo.clients --endpoints-dir DIR ENDPOINT [ENDPOINT ...]   # until stopped (SIGTERM)

Each endpoint is a local one (its state under DIR/<endpoint>); a request is two rows made from
the features its /ping lists (a short post for a text feature, 1.0 for a number).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def row_for(features: list[str]) -> list:
    return ["a short post about the weather" if name == "text" else 1.0 for name in features]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints-dir", required=True)
    parser.add_argument("--seconds", type=float, default=1800, help="stop after this long at the latest")
    parser.add_argument("endpoints", nargs="+")
    args = parser.parse_args(argv)
    from operators.deploy.endpoint_client import invoke, ping
    from operators.deploy.targets.local import LocalServerTarget

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    sent = {e: 0 for e in args.endpoints}
    serving: dict[str, tuple[str, list[str]]] = {}  # endpoint -> (url, features), once it answers
    deadline = time.monotonic() + args.seconds
    while not stop["now"] and time.monotonic() < deadline:
        for endpoint in args.endpoints:
            if endpoint not in serving or sent[endpoint] % 50 == 0:  # (re)read: a server starts on its own port
                url = LocalServerTarget(endpoint, state_dir=f"{args.endpoints_dir}/{endpoint}").url
                answer = ping(url, timeout=2)
                if not answer:
                    serving.pop(endpoint, None)
                    continue
                serving[endpoint] = (url, answer["features"])
            url, features = serving[endpoint]
            try:
                invoke(url, [row_for(features)] * 2, timeout=10)
            except Exception:  # noqa: BLE001 - a client sees errors too; the endpoint's /metrics counts them
                pass
            sent[endpoint] += 1
        time.sleep(0.02)
    print(json.dumps({"requests_sent": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
