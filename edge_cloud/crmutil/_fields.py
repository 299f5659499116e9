"""Field numbers of Info messages, as `fields` paths."""

from __future__ import annotations

from google.protobuf.message import Message

__all__ = ["field_number", "info_fields"]


def info_fields(cls: type[Message]) -> tuple[str, str, str]:
    """The field numbers of `state`, `errors` and `status` of an Info message."""
    by_name = cls.DESCRIPTOR.fields_by_name
    return (
        str(by_name["state"].number),
        str(by_name["errors"].number),
        str(by_name["status"].number),
    )


def field_number(cls: type[Message], name: str) -> str:
    """One field's number as a `fields` path."""
    return str(cls.DESCRIPTOR.fields_by_name[name].number)
