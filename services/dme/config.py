"""DME settings: the original's flags (dme.md §2.13) where they apply, loopback defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_cloud.config import CommonConfig, host_port, option

__all__ = ["DmeConfig"]


def duration(value: str) -> float:
    """Parse a Go-style duration (`24h`, `10m`, `90s`, `1h30m`) or plain seconds.

    Args:
        value: The text given.

    Returns:
        Seconds.

    Raises:
        ValueError: When the text is not a positive duration.
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
        number = ""
        units = {"h": 3600.0, "m": 60.0, "s": 1.0}
        for char in text:
            if char.isdigit() or char == ".":
                number += char
            elif char in units and number:
                seconds += float(number) * units[char]
                number = ""
            else:
                raise ValueError(f"invalid duration {value!r}") from None
        if number:
            raise ValueError(f"invalid duration {value!r} (missing unit)") from None
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class DmeConfig(CommonConfig):
    """DME settings; defaults are the `make run` topology on loopback.

    Cookie keys: with no `--session-key-file` the DME signs cookies with the original's
    test-mode key (kid 0, secret "secret") and says so in a warning at start; a real
    deployment passes a key file (JSON `{"current": <kid>, "secrets": {"<kid>": "..."}}`,
    or a file holding one secret, used as kid 1).
    """

    api_addr: str = option("127.0.0.1:50051", "gRPC listen address", go="apiAddr", parse=host_port)
    http_addr: str | None = option(
        "127.0.0.1:38001",
        "REST address for mobile SDKs; empty disables",
        go="httpAddr",
        parse=host_port,
    )
    notify_addrs: tuple[str, ...] = option(
        ("127.0.0.1:50001",), "Controller notify addresses", go="notifyAddrs"
    )
    region: str = option("local", "region name", go="region")
    carrier: str = option(
        "standalone", "operator plugin for location and QoS (standalone: simulator)", go="carrier"
    )
    locverurl: str = option("", "operator location verification API URL", go="locverurl")
    toksrvurl: str = option("", "token server URL returned by RegisterClient", go="toksrvurl")
    qosposurl: str = option("", "operator QoS position KPI server", go="qosposurl")
    qossesaddr: str = option(
        "", "operator QoS priority session API; empty: sessions not offered", go="qossesaddr"
    )
    cookie_expiration: float = option(
        24 * 3600.0,
        "session cookie lifetime (Go duration like 24h, or seconds)",
        go="cookieExpiration",
        parse=duration,
    )
    edge_events_cookie_expiration: float = option(
        600.0,
        "edge-events cookie lifetime (Go duration like 10m, or seconds)",
        go="edgeEventsCookieExpiration",
        parse=duration,
    )
    session_key_file: Path | None = option(
        None, "cookie signing keys (JSON or one secret); test-mode key when unset"
    )
    test_mode: bool = option(
        False, "test mode: test-mode cookie key, no rate limiting", go="testMode"
    )
    scale_id: str = option(
        "", "id telling DMEs apart in metrics (dmeId tag); the hostname when empty", go="scaleID"
    )
    no_random: bool = option(
        False,
        "break near ties deterministically (the original's E2ETEST_NORANDOM)",
        env="E2ETEST_NORANDOM",
    )
