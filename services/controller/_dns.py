"""DNS-label helpers shared by the cloudlet, cluster, app and app-instance rules.

The original's `util.DNSSanitize` and the numbered-candidate scheme it uses for every label
and id reserved under a bare key (cloudlet DNS labels, cluster and app-instance labels, App
global ids): the base label, then `<base>1`, `<base>2`..., each cut to fit.
"""

from __future__ import annotations

__all__ = ["dns_sanitize", "next_dns_label", "numbered_labels", "sanitize_trunc"]


def dns_sanitize(name: str) -> str:
    """RFC 1123 label characters only (the original's `util.DNSSanitize`).

    Lower-cases letters, keeps digits, turns `-`/`_` into `-` except at either end, drops
    everything else (names are ASCII, so byte and character agree).
    """
    out: list[str] = []
    last = len(name) - 1
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.islower() or ch.isdigit()):
            out.append(ch)
        elif ch.isascii() and ch.isupper():
            out.append(ch.lower())
        elif ch in "-_" and 0 < i < last:
            out.append("-")
    return "".join(out)


def sanitize_trunc(name: str, max_len: int) -> str:
    """`dns_sanitize`, cut to `max_len` characters."""
    return dns_sanitize(name)[:max_len]


def next_dns_label(label: str, max_len: int, counter: int) -> str:
    """The `counter`-th candidate label: `label`, then `label1`, `label2`..., cut to fit."""
    suffix = str(counter) if counter > 0 else ""
    excess = len(label) + len(suffix) - max_len
    if excess > 0:
        label = label[: len(label) - excess]
    return label + suffix


def numbered_labels(base: str, max_len: int, count: int) -> list[str]:
    """The first `count` candidates for `base` (`next_dns_label` with 0, 1, 2...)."""
    return [next_dns_label(base, max_len, i) for i in range(count)]
