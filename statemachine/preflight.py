"""``make preflight``: before a deploy, does the account take the parameters chosen?

Reads (read-only, with the caller's credentials) the account's Lambda settings
(``GetAccountSettings``: its concurrency, and what is left unreserved), this stack's own reserve if
it exists, the Step Functions quotas (Service Quotas, found by name: their codes are printed), and
with ``InputBucketName`` the bucket's versioning and EventBridge setting; then checks the
parameters (template.yaml's defaults, then samconfig.toml's ``parameter_overrides``, or the
``--parameter-overrides`` given, as ``sam deploy`` takes them) against them and the template's
own constraints. Prints one line per check and a result; exit status 0 when nothing FAILs, 1 when
something does (``--strict``: a WARN too), 2 when the checks could not run.

    python -m statemachine.preflight [--parameter-overrides K=V ...] [--stack-name S] [--region R]
                                     [--json] [--strict] [--record FILE]

``--record FILE`` keeps every answer (account ids masked) for tests/fixtures/preflight/.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

ROOT = Path(__file__).resolve().parents[1]
SAMCONFIG = ROOT / "samconfig.toml"
HEADROOM = 0.8  # what the admitted conversions may ask of the concurrency they share (docs/deploy.md)
UNRESERVED_MINIMUM = 100  # AWS keeps this much of an account's concurrency unreserved
MAP_CONCURRENCY_MAX = 10_000  # a Distributed Map runs at most this many children at once
STARTERS = 2  # the Starter's event source runs at most two at once
TRANSITIONS_PER_CHILD_PER_SECOND = 0.3  # a map child: ~3 state transitions in ~10 s
OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"


@dataclass
class Check:
    id: str
    status: str
    need: str = ""
    have: str = ""
    fix: str = ""


@dataclass
class Quota:
    name: str
    code: str
    value: float


@dataclass
class Account:
    """What the account says (None: not read)."""

    account: str = ""
    region: str = ""
    concurrency: int | None = None
    unreserved: int | None = None
    own_reserve: int = 0  # what this stack's WriteChunks reserves already (an update gives it back first)
    quotas: list[Quota] | None = None
    quota_error: str = ""
    versioning: str | None = None  # of an existing input bucket
    eventbridge: bool | None = None


# --- parameters ------------------------------------------------------------------------------------


def parse_overrides(text: str) -> dict[str, str]:
    """``K=V K2="a b"``, as ``sam deploy --parameter-overrides`` takes them."""
    out = {}
    for token in shlex.split(text):
        name, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"{token!r} is not Key=Value")
        out[name] = value
    return out


def parameters(template: dict[str, Any], overrides: str | None, env: str = "default") -> dict[str, str]:
    """Template defaults, then samconfig.toml's parameter_overrides (or ``overrides``, which replace them)."""
    values = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    if overrides is None and SAMCONFIG.exists():
        config = tomllib.loads(SAMCONFIG.read_text()).get(env, {}).get("deploy", {}).get("parameters", {})
        overrides = str(config.get("parameter_overrides", ""))
    given = parse_overrides(overrides or "")
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise ValueError(f"not parameters of template.yaml: {', '.join(unknown)}")
    return values | given


def template_checks(template: dict[str, Any], values: dict[str, str]) -> list[Check]:
    """Each value against its parameter's constraints (CloudFormation would refuse it at deploy)."""
    wrong = []
    for name, spec in template["Parameters"].items():
        value = values[name]
        problem = ""
        if spec.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                problem = "not a number"
            else:
                if "MinValue" in spec and number < spec["MinValue"]:
                    problem = f"below {spec['MinValue']}"
                if "MaxValue" in spec and number > spec["MaxValue"]:
                    problem = f"above {spec['MaxValue']}"
        if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
            problem = f"not one of {spec['AllowedValues']}"
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
            problem = f"does not match {spec['AllowedPattern']}"
        if problem:
            wrong.append(Check(f"params.{name}", FAIL, "template.yaml's constraint", f"{value!r}: {problem}"))
    if not values["InputPrefix"]:
        opt_in = values["AllowWholeInputBucket"] == "true"
        wrong.append(
            Check(
                "input.prefix",
                WARN if opt_in else FAIL,
                "a prefix (least privilege)",
                "empty: every function may read the whole input bucket",
                "set InputPrefix (such as incoming/)" + ("" if opt_in else ", or AllowWholeInputBucket=true"),
            )
        )
    return wrong or [Check("params", OK, "template.yaml's constraints", "all hold")]


# --- the account -----------------------------------------------------------------------------------


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__))


def read_account(clients: Callable[[str], Any], values: dict[str, str], stack: str) -> Account:
    """Everything the checks need from the account (read-only calls)."""
    facts = Account()
    identity = clients("sts").get_caller_identity()
    facts.account = str(identity["Account"])
    facts.region = str(clients("sts").meta.region_name)
    limits = clients("lambda").get_account_settings()["AccountLimit"]
    facts.concurrency = int(limits["ConcurrentExecutions"])
    facts.unreserved = int(limits["UnreservedConcurrentExecutions"])
    facts.own_reserve = _own_reserve(clients, stack)
    try:
        facts.quotas = _states_quotas(clients("service-quotas"))
    except (ClientError, BotoCoreError) as exc:
        facts.quota_error = _code(exc)
    bucket = values.get("InputBucketName", "")
    if bucket:
        s3 = clients("s3")
        facts.versioning = str(s3.get_bucket_versioning(Bucket=bucket).get("Status", "Off"))
        notification = s3.get_bucket_notification_configuration(Bucket=bucket)
        facts.eventbridge = "EventBridgeConfiguration" in notification
    return facts


def _own_reserve(clients: Callable[[str], Any], stack: str) -> int:
    """WriteChunks' reserve if the stack exists (an update releases it before reserving anew)."""
    try:
        resources = clients("cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return 0
        raise
    for resource in resources:
        if resource["LogicalResourceId"] == "WriteChunksFunction" and resource.get("PhysicalResourceId"):
            answer = clients("lambda").get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
            return int(answer.get("ReservedConcurrentExecutions", 0))
    return 0


def _states_quotas(quotas: Any) -> list[Quota]:
    """Step Functions' quotas: the account's applied values, else AWS's defaults."""
    found: list[Quota] = []
    for method in ("list_service_quotas", "list_aws_default_service_quotas"):
        for page in quotas.get_paginator(method).paginate(ServiceCode="states"):
            found.extend(Quota(q["QuotaName"], q["QuotaCode"], float(q["Value"])) for q in page.get("Quotas", []))
        if found:
            return found
    return found


def quota(facts: Account, *words: str) -> Quota | None:
    """The quota whose name has every one of ``words`` (case-insensitive)."""
    for q in facts.quotas or []:
        if all(w.lower() in q.name.lower() for w in words):
            return q
    return None


# --- the checks --------------------------------------------------------------------------------------


def _cap(values: dict[str, str]) -> int:
    from nwb2pennsieve.cloud.admission import admission_cap

    return admission_cap(
        int(values["MaxRunningExecutions"]), int(values["WritersReservedConcurrency"]), int(values["WriteConcurrency"])
    )


def lambda_checks(values: dict[str, str], facts: Account) -> list[Check]:
    """The writers' reserve, and the concurrency the admitted conversions ask for at most."""
    reserve, write = int(values["WritersReservedConcurrency"]), int(values["WriteConcurrency"])
    importing = values["ImporterEnabled"] == "true"
    upload = int(values["UploadConcurrency"]) if importing else 0
    cap = _cap(values)
    free = (facts.unreserved or 0) + facts.own_reserve  # what this stack may take
    checks = []
    if reserve:
        left = free - reserve
        status = FAIL if left < UNRESERVED_MINIMUM else OK
        if status == OK and int(values["MaxRunningExecutions"]) * write > HEADROOM * reserve:
            status = WARN
        checks.append(
            Check(
                "lambda.reserve",
                status,
                f">= {reserve + UNRESERVED_MINIMUM} unreserved (reserve {reserve} + AWS's {UNRESERVED_MINIMUM})",
                f"{free} (account {facts.concurrency})",
                "ask for more Lambda concurrency (Service Quotas: Lambda, Concurrent executions), "
                "or WritersReservedConcurrency=0 (no reserve)"
                if status == FAIL
                else (f"the Starter admits {cap} at once (80 % of the reserve)" if status == WARN else ""),
            )
        )
        writers_budget, others_budget = reserve, free - reserve
        others = cap * (2 + upload) + STARTERS
        need = f"{cap} x {write} writers <= 80 % of {reserve}; {others} others <= 80 % of {others_budget}"
        fits = cap * write <= HEADROOM * writers_budget and others <= HEADROOM * others_budget
    else:
        checks.append(Check("lambda.reserve", SKIP, "no writers' reserve (WritersReservedConcurrency=0)"))
        peak = cap * (max(write, upload) + 2) + STARTERS
        need = f"{cap} x (max({write}, {upload}) + 2) + {STARTERS} = {peak} <= 80 % of {free}"
        fits = peak <= HEADROOM * free
    if write > (reserve or free):
        status, fix = FAIL, "lower WriteConcurrency: one conversion's writers could never all run"
    elif not fits:
        status, fix = WARN, "lower MaxRunningExecutions or WriteConcurrency (throttled writers wait, then fail)"
    else:
        status, fix = OK, ""
    checks.append(Check("lambda.budget", status, need, f"{free} unreserved", fix))
    return checks


def states_checks(values: dict[str, str], facts: Account) -> list[Check]:
    """Distributed Map concurrency, open executions and map runs, state transitions at the peak."""
    write, upload, cap = int(values["WriteConcurrency"]), int(values["UploadConcurrency"]), _cap(values)
    checks = []
    too_wide = max(write, upload) > MAP_CONCURRENCY_MAX
    checks.append(
        Check(
            "states.map",
            FAIL if too_wide else OK,
            f"WriteConcurrency, UploadConcurrency <= {MAP_CONCURRENCY_MAX:,}",
            f"{write}, {upload}",
            "lower them" if too_wide else "",
        )
    )
    if facts.quotas is None or not facts.quotas:
        reason = facts.quota_error or "none listed"
        checks.append(
            Check(
                "states.quotas",
                WARN,
                "Step Functions quotas",
                f"could not read ({reason})",
                "check them in the Service Quotas console",
            )
        )
        return checks
    listed = ", ".join(f"{q.name} ({q.code}) {q.value:g}" for q in facts.quotas)
    checks.append(Check("states.quotas", OK, "Step Functions quotas, by name", listed[:400]))
    opened = quota(facts, "open", "execution")
    if opened:
        need = cap * (1 + write + upload)
        status = FAIL if need > opened.value else OK
        checks.append(
            Check("states.open", status, f"{need} open executions at most", f"{opened.value:g} ({opened.code})")
        )
    refill = quota(facts, "statetransition", "refill") or quota(facts, "state transition", "refill")
    if refill:
        peak = cap * write * TRANSITIONS_PER_CHILD_PER_SECOND
        status = WARN if peak > refill.value else OK
        fix = f'ask for more "{refill.name}" ({refill.code}), or lower WriteConcurrency' if status == WARN else ""
        checks.append(
            Check("states.transitions", status, f"~{peak:.0f}/s at the peak", f"refill {refill.value:g}/s", fix)
        )
    return checks


def input_checks(values: dict[str, str], facts: Account) -> list[Check]:
    if not values.get("InputBucketName"):
        return [Check("input.bucket", SKIP, "the stack creates the input bucket (versioned, EventBridge on)")]
    checks = [
        Check(
            "input.eventbridge",
            OK if facts.eventbridge else FAIL,
            "EventBridge notifications on",
            "on" if facts.eventbridge else "off",
            "" if facts.eventbridge else "turn on Amazon EventBridge in the bucket's Event notifications",
        )
    ]
    enabled = facts.versioning == "Enabled"
    fix = "" if enabled else "enable versioning: without it a replaced file is pinned by ETag and cannot be reread"
    checks.append(Check("input.versioning", OK if enabled else WARN, "Enabled", str(facts.versioning), fix))
    return checks


def run_checks(template: dict[str, Any], values: dict[str, str], facts: Account) -> list[Check]:
    return [
        *template_checks(template, values),
        *lambda_checks(values, facts),
        *states_checks(values, facts),
        *input_checks(values, facts),
    ]


# --- the command -------------------------------------------------------------------------------------

SHOWN = (
    "WriteConcurrency",
    "MaxRunningExecutions",
    "WritersReservedConcurrency",
    "UploadConcurrency",
    "ImporterEnabled",
)


def report(checks: list[Check], facts: Account, values: dict[str, str], stack: str) -> str:
    lines = [
        f"nwb2pennsieve preflight: account ...{facts.account[-4:]}, {facts.region}, stack {stack}",
        "parameters: " + " ".join(f"{k}={values[k]}" for k in SHOWN),
        f"{'CHECK':<20} {'STATUS':<6} {'NEED':<44} {'HAVE':<24} FIX",
    ]
    lines += [f"{c.id:<20} {c.status:<6} {c.need:<44} {c.have:<24} {c.fix}".rstrip() for c in checks]
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    verdict = (
        "the parameters do not fit: fix the FAIL lines first"
        if fails
        else "the parameters fit; `make deploy` may proceed"
    )
    lines.append(f"RESULT {fails} FAIL, {warns} WARN: {verdict}")
    return "\n".join(lines)


_ACCOUNT = re.compile(r"\b\d{12}\b")


def recorder(path: Path) -> Callable[..., None]:
    """An after-call hook keeping every answer (account ids masked) as tests/fixtures/preflight/ holds them."""
    calls: list[dict[str, Any]] = []

    def record(http_response: Any, parsed: dict[str, Any], model: Any, **kwargs: Any) -> None:
        answer = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
        service = model.service_model.service_name
        calls.append({"call": f"{service}.{model.name}", "response": answer})
        note = "recorded by make preflight --record (account ids masked)"
        text = _ACCOUNT.sub("123456789012", json.dumps({"note": note, "calls": calls}, indent=1, default=str))
        path.write_text(text + "\n")

    return record


def main(argv: list[str] | None = None, clients: Callable[[str], Any] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameter-overrides", nargs="*", help="K=V ... as for sam deploy (replace samconfig's)")
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment")
    parser.add_argument("--stack-name", default="nwb2pennsieve")
    parser.add_argument("--region", help="default: samconfig's, else your AWS configuration's")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--strict", action="store_true", help="a WARN fails too")
    parser.add_argument("--record", type=Path, help="keep every AWS answer (account ids masked) in this file")
    args = parser.parse_args(argv)
    from statemachine.render import load_template

    try:
        template = load_template()
        overrides = " ".join(shlex.quote(o) for o in args.parameter_overrides) if args.parameter_overrides else None
        values = parameters(template, overrides, args.config_env)
        clients = clients or _session_clients(args.region or _config_region(args.config_env), args.record)
        facts = read_account(clients, values, args.stack_name)
    except (ValueError, ClientError, BotoCoreError) as exc:
        print(f"error: preflight could not run: {exc}", file=sys.stderr)
        return 2
    checks = run_checks(template, values, facts)
    if args.json:
        print(
            json.dumps(
                {"account": asdict(facts) | {"account": facts.account[-4:]}, "checks": [asdict(c) for c in checks]}
            )
        )
    else:
        print(report(checks, facts, values, args.stack_name))
    failing = {FAIL, WARN} if args.strict else {FAIL}
    return 1 if any(c.status in failing for c in checks) else 0


def _config_region(env: str) -> str | None:
    if not SAMCONFIG.exists():
        return None
    region = tomllib.loads(SAMCONFIG.read_text()).get(env, {}).get("deploy", {}).get("parameters", {}).get("region")
    return str(region) if region else None


def _session_clients(region: str | None, record: Path | None) -> Callable[[str], Any]:
    import boto3

    session = boto3.session.Session(region_name=region)
    made: dict[str, Any] = {}
    hook = recorder(record) if record else None

    def client(service: str) -> Any:
        if service not in made:
            made[service] = session.client(service)  # type: ignore[call-overload]
            if hook:
                made[service].meta.events.register("after-call", hook)
        return made[service]

    return client


if __name__ == "__main__":
    raise SystemExit(main())
