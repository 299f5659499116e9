"""Show filtering: does a stored object match a partial object used as a filter?

Show RPCs take a possibly partial object and stream back every object that matches it
(objects.md §3.3): fields left at their zero value match anything. The rules follow the
original's generated `Matches(..., MatchFilter())`:

- a non-zero scalar or enum of the filter must equal the object's;
- a sub-message present in the filter is matched recursively (so an empty one matches all);
- each entry of a filter list must match some entry of the object's list (recursively for
  messages); each key of a filter map must exist in the object's map with a matching value;
- the `fields` update mask is ignored.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.objects.registry import descriptor_of

__all__ = ["matches"]


def matches(filter_msg: Message, obj: Message) -> bool:
    """Whether `obj` matches the Show filter `filter_msg`.

    Args:
        filter_msg: The request object; zero fields are wildcards.
        obj: A stored object of the same type.

    Returns:
        True when every non-zero filter field agrees with the object.

    Raises:
        TypeError: When the two are different message types.
    """
    if descriptor_of(filter_msg).full_name != descriptor_of(obj).full_name:
        raise TypeError(
            f"cannot match a {descriptor_of(obj).full_name} with a "
            f"{descriptor_of(filter_msg).full_name} filter"
        )
    return _match(filter_msg, obj)


def _match(flt: Message, obj: Message) -> bool:
    for index, field in enumerate(descriptor_of(flt).fields):
        if index == 0 and field.name == "fields":
            continue
        want = getattr(flt, field.name)
        if field.is_repeated:
            if want and not _match_collection(field, want, getattr(obj, field.name)):
                return False
        elif field.message_type is not None:
            if flt.HasField(field.name) and not _match(want, getattr(obj, field.name)):
                return False
        elif want and want != getattr(obj, field.name):
            return False
    return True


def _match_collection(field: FieldDescriptor, want: Any, have: Any) -> bool:
    mt = field.message_type
    if mt is not None and mt.GetOptions().map_entry:
        value_is_msg = mt.fields_by_name["value"].message_type is not None
        for k in want:
            if k not in have:
                return False
            if value_is_msg:
                if not _match(want[k], have[k]):
                    return False
            elif want[k] != have[k]:
                return False
        return True
    if mt is not None:
        return all(any(_match(w, h) for h in have) for w in want)
    return all(w in have for w in want)
