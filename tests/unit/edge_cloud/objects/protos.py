"""Every generated `edgeproto` module loaded, so the default pool can answer any name."""

from __future__ import annotations

import functools
import importlib
import pkgutil

import edgeproto
from google.protobuf.descriptor import Descriptor
from google.protobuf.descriptor_pool import Default


@functools.cache
def _load_all() -> None:
    for module in pkgutil.iter_modules(edgeproto.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"edgeproto.{module.name}")


def find_message(full_name: str) -> Descriptor:
    _load_all()
    return Default().FindMessageTypeByName(full_name)


def all_messages() -> list[Descriptor]:
    """Every top-level message of package edgeproto."""
    _load_all()
    out: list[Descriptor] = []
    for module in pkgutil.iter_modules(edgeproto.__path__):
        if module.name.endswith("_pb2"):
            mod = importlib.import_module(f"edgeproto.{module.name}")
            out.extend(mod.DESCRIPTOR.message_types_by_name.values())
    return out
