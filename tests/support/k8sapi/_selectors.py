"""Label and field selectors, with the API server's grammar and error messages."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.k8sapi._errors import ApiError, bad_request

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>[^=!\s]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!)?\s*(?P<key>{_KEY})\s*$")


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects without the label too.
        return not present or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` is two requirements)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _check_value(value: str, selector: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise bad_request(
            f'unable to parse requirement: values[0][{selector}]: Invalid value: "{value}": a '
            "valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character"
        )


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over labels for `labelSelector` (=, ==, !=, in, notin, exists, !exists).

    Raises:
        ApiError: 400 BadRequest naming the requirement that does not parse.
    """
    requirements: list[_Requirement] = []
    if text.strip():
        for raw in _split_top_level(text):
            if not raw.strip():
                raise bad_request(
                    f"unable to parse requirement: found '', expected: identifier in {text!r}"
                )
            if m := _SET_RE.match(raw):
                values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
                for v in values:
                    _check_value(v, m["key"])
                requirements.append(_Requirement(m["key"], m["op"], values))
            elif m := _CMP_RE.match(raw):
                _check_value(m["value"], m["key"])
                op = "!=" if m["op"] == "!=" else "="
                requirements.append(_Requirement(m["key"], op, (m["value"],)))
            elif m := _EXISTS_RE.match(raw):
                requirements.append(_Requirement(m["key"], "!exists" if m["neg"] else "exists", ()))
            else:
                raise bad_request(f"unable to parse requirement: invalid label selector {raw!r}")

    def matches(labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in requirements)

    return matches


def match_labels_selector(
    selector: Mapping[str, Any] | None,
) -> Callable[[Mapping[str, str]], bool]:
    """A predicate for a `LabelSelector` object (matchLabels + matchExpressions), as workloads use.

    An empty or missing selector matches nothing, as the workload controllers treat it.
    """
    if not selector:
        return lambda _labels: False
    reqs = [_Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(
            _Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        )
    if not reqs:
        return lambda _labels: False
    return lambda labels: all(r.matches(labels) for r in reqs)


def parse_field_selector(
    text: str, kind: str, supported: tuple[str, ...]
) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over whole objects for `fieldSelector`.

    Args:
        text: The selector, e.g. `metadata.name=web,status.phase!=Failed`.
        kind: The resource's kind, named in the error for an unsupported field.
        supported: Field paths this resource allows besides metadata.name/namespace.

    Raises:
        ApiError: 400 BadRequest for a malformed selector or an unsupported field, with the
            API server's wording.
    """
    checks: list[tuple[tuple[str, ...], bool, str]] = []
    if text.strip():
        for raw in text.split(","):
            m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", raw)
            if m is None:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{raw}'")
            field, op, value = m[1], m[2], m[3]
            if field not in ("metadata.name", "metadata.namespace", *supported):
                raise bad_request(f'field label not supported: "{field}" for {kind}')
            checks.append((tuple(field.split(".")), op == "!=", value))

    def matches(obj: Mapping[str, Any]) -> bool:
        for path, negate, value in checks:
            cur: Any = obj
            for part in path:
                cur = cur.get(part) if isinstance(cur, Mapping) else None
            actual = "" if cur is None else str(cur)
            if (actual == value) == negate:
                return False
        return True

    return matches


__all__ = [
    "ApiError",
    "match_labels_selector",
    "parse_field_selector",
    "parse_label_selector",
]
