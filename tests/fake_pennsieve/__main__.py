"""Run the fake Pennsieve by hand: ``python -m tests.fake_pennsieve`` (from the repository root).

It starts moto's Cognito on 127.0.0.1 (unless ``--static-token``), seeds a dataset, TimeSeries
packages and a workflow run of each, creates an API key, prints the settings to export and
serves until interrupted. ``--s3`` also starts its S3 (a moto server behind the gate that checks
the viewer assets' credentials; ``AWS_ENDPOINT_URL`` points the importer at it). ``--json``
prints the settings as one JSON line instead and reads commands from stdin: ``stats`` prints the
state (assets, ranges per package, S3 stores and refusals) as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any

from .cognito import MotoCognito
from .s3gate import S3Gate
from .server import FakePennsieve


def stats(fake: FakePennsieve) -> dict[str, Any]:
    with fake.lock:
        return {
            "assets": [fake._asset_json(a) for a in fake.assets.values()],
            "ranges": {package: len(r) for package, r in fake.ranges.items()},
            "range_requests": fake.range_requests,
            "channels": {package: len(c) for package, c in fake.channels.items()},
            "s3": fake.s3.stats() if fake.s3 is not None else None,
        }


def _serve_commands(fake: FakePennsieve) -> None:
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(stats(fake)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_pennsieve", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request (S3's too)")
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="seconds a token is accepted")
    parser.add_argument("--static-token", help="accept this bearer token and skip Cognito (moto)")
    parser.add_argument("--packages", type=int, default=1, help="TimeSeries packages to seed, a run each (default 1)")
    parser.add_argument("--s3", action="store_true", help="start its S3 too (viewer assets)")
    parser.add_argument("--json", action="store_true", help="print the settings as one JSON line")
    args = parser.parse_args(argv)

    cognito = None if args.static_token else MotoCognito()
    gate = S3Gate.start(latency_ms=args.latency_ms) if args.s3 else None
    fake = FakePennsieve(
        cognito,
        static_tokens=(args.static_token,) if args.static_token else (),
        token_ttl=args.token_ttl,
        latency=args.latency_ms / 1000,
        port=args.port,
        s3=gate,
    ).start()
    dataset = fake.add_dataset("trial")
    packages = [fake.add_package(dataset, f"recording-{i}.nwb") for i in range(max(1, args.packages))]
    runs = [fake.add_run(dataset, [p]) for p in packages]
    env = {"PENNSIEVE_API_HOST": fake.url, "PENNSIEVE_API_HOST2": fake.url, "INTEGRATION_ID": runs[0]}
    if gate is not None:
        env["AWS_ENDPOINT_URL"] = gate.url
    if cognito is not None:
        key = cognito.new_api_key()
        env |= {
            "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": cognito.endpoint,
            "PENNSIEVE_API_KEY": key.key,
            "PENNSIEVE_API_SECRET": key.secret,
        }
    else:
        env["SESSION_TOKEN"] = args.static_token
    done = threading.Event()
    if args.json:
        settings = {"url": fake.url, "dataset_id": dataset, "package_ids": packages, "runs": runs, "env": env}
        print(json.dumps(settings), flush=True)
        threading.Thread(target=_serve_commands, args=(fake,), daemon=True).start()
    else:
        print(f"fake Pennsieve at {fake.url} (dataset {dataset}, package {packages[0]}); Ctrl-C to stop")
        print("# export these, then run: nwb2pennsieve import data/output/sample")
        for k, v in env.items():
            print(f"export {k}={v}")
        sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    fake.stop()
    if gate is not None:
        gate.stop()
    if cognito is not None:
        cognito.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
