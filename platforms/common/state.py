"""State a plugin only has after `init`, shared by the AWS plugins.

Each plugin keeps what `init` builds (config, sessions, parsed properties) in optional
attributes; a call before `init` is a caller's ordering bug, so it is refused with one
clear `FailedPrecondition` rather than an `AttributeError` deep inside boto3.
"""

from __future__ import annotations

from typing import TypeVar

from edge_cloud.errors import FailedPrecondition

__all__ = ["after_init"]

T = TypeVar("T")


def after_init(value: T | None, plugin: str) -> T:
    """Returns state `init` set, so properties need no repeated None checks.

    Args:
        value: The attribute `init` fills.
        plugin: The platform type, named in the error.

    Returns:
        The value, known not to be None.

    Raises:
        FailedPrecondition: `init` has not run.
    """
    if value is None:
        raise FailedPrecondition(f"{plugin} platform used before init")
    return value
