"""The state machine definition as deployed: the ASL with template.yaml's DefinitionSubstitutions applied.

``python statemachine/render.py [OUT]`` writes it (default: stdout) with the template's parameter
defaults and example ARNs, for ``asl-validator`` (``make validate``); the tests use the same
functions with the ARNs of their moto functions. SAM substitutes ``${Key}`` textually, so the
source file is not JSON until rendered (``MaxConcurrency`` is a number).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
DEFINITION = ROOT / "statemachine" / "nwb2pennsieve.asl.json"
STATE_MACHINE = "ConversionStateMachine"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """template.yaml with its short-form tags as plain dicts (``!Ref X`` → ``{"Ref": "X"}``)."""
    from cfnlint.decode import decode_str

    template, problems = decode_str(path.read_text())
    if problems:
        raise ValueError(f"{path}: {problems}")
    return dict(template)


def template_refs(template: dict[str, Any], region: str = "us-east-1", **values: Any) -> dict[str, Any]:
    """Parameter defaults, example names and ARNs of the resources, conditions; ``values`` win."""
    refs: dict[str, Any] = {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
    refs.update(
        {
            "CreateInputBucket": True,
            "HasSecret": False,
            "LegacyImport": False,
            "AssetImportWithSecret": False,
            "HasInputKmsKey": False,
            "HasNotificationEmail": False,
            "HasWritersReserve": False,
            "AWS::StackName": "nwb2pennsieve",
            "AWS::Region": region,
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
        }
    )
    for name, resource in template["Resources"].items():
        refs.setdefault(name, f"{name.lower()}-example")
        if resource["Type"] == "AWS::S3::Bucket":
            refs.setdefault(f"{name}.Arn", f"arn:aws:s3:::{values.get(name, refs[name])}")
        if resource["Type"] == "AWS::Serverless::Function":
            refs[f"{name}.Arn"] = f"arn:aws:lambda:{region}:123456789012:function:nwb2pennsieve-{name}"
        if resource["Type"] == "AWS::SQS::Queue":
            queue = values.get(f"{name}.QueueName", refs[name])
            refs.setdefault(f"{name}.QueueName", queue)
            refs.setdefault(f"{name}.Arn", f"arn:aws:sqs:{region}:123456789012:{queue}")
            refs[name] = f"https://sqs.{region}.amazonaws.com/123456789012/{queue}"  # Ref: the queue URL
        if resource["Type"] == "AWS::DynamoDB::Table":
            refs.setdefault(
                f"{name}.Arn", f"arn:aws:dynamodb:{region}:123456789012:table/{values.get(name, refs[name])}"
            )
    refs.update(values)
    return refs


def resolve(value: Any, refs: dict[str, Any]) -> Any:
    """Resolve Ref / GetAtt / Sub / If with ``refs`` (a name, or ``Name.Attr``, to its value)."""
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return refs[arg]
        if fn == "Fn::GetAtt":
            return refs[".".join(arg) if isinstance(arg, list) else arg]
        if fn == "Fn::If":
            cond, yes, no = arg
            return resolve(yes if refs[cond] else no, refs)
        if fn == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return PLACEHOLDER.sub(lambda m: str(refs[m.group(1)]), text)
    return value


def substitutions(template: dict[str, Any], refs: dict[str, Any]) -> dict[str, Any]:
    props = template["Resources"][STATE_MACHINE]["Properties"]
    return {k: resolve(v, refs) for k, v in props["DefinitionSubstitutions"].items()}


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(subs: dict[str, Any], text: str | None = None) -> str:
    """The definition with every ``${Key}`` replaced, as SAM does; an unknown key is an error."""
    source = DEFINITION.read_text() if text is None else text
    missing = placeholders(source) - set(subs)
    if missing:
        raise KeyError(f"no DefinitionSubstitutions for {sorted(missing)}")
    return PLACEHOLDER.sub(lambda m: str(subs[m.group(1)]), source)


def main(argv: list[str]) -> int:
    template = load_template()
    text = render(substitutions(template, template_refs(template)))
    if argv:
        Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
