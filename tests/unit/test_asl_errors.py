"""Every error the state machine retries or catches is one that can happen.

Lambda reports an unhandled exception with ``errorType`` = the class's ``__name__``; Step Functions
matches ``ErrorEquals`` against that name. A name no handler can raise (a typo, a class renamed
or removed) silently never matches, so each name must be a ``States.*`` or ``Lambda.*`` error of
the service, or the ``__name__`` of an exception class the core package (or pydantic, which
validates every event) defines.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

import nwb2pennsieve
from statemachine.render import DEFINITION, load_template, render, substitutions, template_refs

# The errors Step Functions and its Lambda integration raise themselves (AWS documentation,
# "Error handling in Step Functions" and the Lambda Invoke API's errors).
STATES_ERRORS = {
    "States.ALL",
    "States.BranchFailed",
    "States.DataLimitExceeded",
    "States.ExceedToleratedFailureThreshold",
    "States.HeartbeatTimeout",
    "States.IntrinsicFailure",
    "States.ItemReaderFailed",
    "States.NoChoiceMatched",
    "States.ParameterPathFailure",
    "States.Permissions",
    "States.QueryEvaluationError",
    "States.ResultPathMatchFailure",
    "States.ResultWriterFailed",
    "States.Runtime",
    "States.TaskFailed",
    "States.Timeout",
}
LAMBDA_ERRORS = {
    "Lambda.AWSLambdaException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.EC2ThrottledException",
    "Lambda.ResourceNotReadyException",
    "Lambda.SdkClientException",
    "Lambda.ServiceException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
}
# The errorType the Lambda runtime itself puts in the payload of an invocation it ended: a
# timeout and running out of memory (older runtimes report both as Lambda.Unknown).
LAMBDA_RUNTIME_ERRORS = {"Sandbox.Timedout", "Runtime.OutOfMemory"}


def handler_error_names() -> set[str]:
    """``__name__`` of every exception class the core package defines, and pydantic's ValidationError."""
    names = {pydantic.ValidationError.__name__}
    for info in pkgutil.walk_packages(nwb2pennsieve.__path__, prefix="nwb2pennsieve."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Exception)
                and value.__module__.startswith("nwb2pennsieve")
            ):
                names.add(value.__name__)
    return names


HANDLER_ERRORS = handler_error_names()


def is_known(name: str) -> bool:
    return name in STATES_ERRORS or name in LAMBDA_ERRORS or name in LAMBDA_RUNTIME_ERRORS or name in HANDLER_ERRORS


def retry_and_catch(node: Any, state: str = "") -> Iterator[tuple[str, list[str]]]:
    """(state name, ErrorEquals) of every Retry and Catch entry, the maps' inner states included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("Retry", "Catch"):
                for entry in value:
                    yield state, entry["ErrorEquals"]
            elif key == "States":
                for child, child_node in value.items():
                    yield from retry_and_catch(child_node, child)
            else:
                yield from retry_and_catch(value, state)
    elif isinstance(node, list):
        for item in node:
            yield from retry_and_catch(item, state)


def rendered_definition() -> dict[str, Any]:
    template = load_template()
    definition: dict[str, Any] = json.loads(render(substitutions(template, template_refs(template))))
    return definition


def test_the_walk_finds_every_error_equals_of_the_definition() -> None:
    entries = list(retry_and_catch(rendered_definition()))
    assert len(entries) == DEFINITION.read_text().count('"ErrorEquals"') > 0


def test_every_error_equals_names_an_error_that_can_happen() -> None:
    entries = retry_and_catch(rendered_definition())
    unknown = sorted({f"{state}: {name}" for state, names in entries for name in names if not is_known(name)})
    assert not unknown, f"ErrorEquals names no handler, Lambda or States error: {unknown}"


@pytest.mark.parametrize(
    "name", ["StorageError", "InvalidInputError", "UploadError", "ValidationError", "ImportBusyError"]
)
def test_the_core_errors_are_known_by_their_class_name(name: str) -> None:
    assert is_known(name)


@pytest.mark.parametrize("name", ["StorgeError", "nwb2pennsieve.errors.StorageError", "States.Everything", "Lambda.X"])
def test_a_misspelt_or_qualified_name_is_not(name: str) -> None:
    assert not is_known(name)
