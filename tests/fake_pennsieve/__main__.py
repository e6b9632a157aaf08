"""Run the fake Pennsieve by hand: ``python -m tests.fake_pennsieve`` (from the repository root).

It starts moto's Cognito on 127.0.0.1 (unless ``--static-token``), seeds a dataset, a
TimeSeries package and a workflow run, creates an API key, prints the settings to export and
serves until interrupted. ``--json`` prints them as one JSON line instead (for scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from .cognito import MotoCognito
from .server import FakePennsieve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_pennsieve", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="seconds a token is accepted")
    parser.add_argument("--static-token", help="accept this bearer token and skip Cognito (moto)")
    parser.add_argument("--packages", type=int, default=1, help="TimeSeries packages to seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print the settings as one JSON line")
    args = parser.parse_args(argv)

    cognito = None if args.static_token else MotoCognito()
    fake = FakePennsieve(
        cognito,
        static_tokens=(args.static_token,) if args.static_token else (),
        token_ttl=args.token_ttl,
        latency=args.latency_ms / 1000,
        port=args.port,
    ).start()
    dataset = fake.add_dataset("trial")
    packages = [fake.add_package(dataset, f"recording-{i}.nwb") for i in range(max(1, args.packages))]
    package = packages[0]
    run = fake.add_run(dataset, [package])
    env = {
        "PENNSIEVE_API_HOST": fake.url,
        "PENNSIEVE_API_HOST2": fake.url,
        "INTEGRATION_ID": run,
    }
    if cognito is not None:
        key = cognito.new_api_key()
        env |= {
            "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": cognito.endpoint,
            "PENNSIEVE_API_KEY": key.key,
            "PENNSIEVE_API_SECRET": key.secret,
        }
    else:
        env["SESSION_TOKEN"] = args.static_token
    if args.json:
        settings = {"url": fake.url, "dataset_id": dataset, "package_ids": packages, "env": env}
        print(json.dumps(settings), flush=True)
    else:
        print(f"fake Pennsieve at {fake.url} (dataset {dataset}, package {package}); Ctrl-C to stop")
        print("# export these, then run: nwb2pennsieve import data/output")
        for k, v in env.items():
            print(f"export {k}={v}")
        sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    fake.stop()
    if cognito is not None:
        cognito.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
