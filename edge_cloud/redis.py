"""Redis: the one way a daemon gets a connected `redis.asyncio` client.

Thin on purpose. redis-py's asyncio client is already typed and complete (pub/sub, streams,
transactions); what this adds is the house rules: an address in any of the forms our flags
use, a PING at connect time so a daemon with a wrong address fails at start with one line
(not at its first publish), deadlines on every command, and our `Unavailable` instead of
redis-py's exception zoo at that boundary.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_cloud.errors import InvalidArgument, Unavailable

__all__ = ["DEFAULT_COMMAND_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT", "Redis", "connect", "redis_url"]

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_COMMAND_TIMEOUT = 10.0


def redis_url(address: str, *, db: int | None = None) -> str:
    """Normalise `host:port` (the `--redis-standalone-addr` form) or a URL to a `redis://` URL.

    Args:
        address: `host:port`, `redis://...` or `rediss://...`.
        db: Database number to select, overriding one in the URL.

    Returns:
        A URL redis-py accepts.

    Raises:
        InvalidArgument: The address is empty or has another scheme.
    """
    text = address.strip()
    if not text:
        raise InvalidArgument("no Redis address given")
    url = text if "://" in text else f"redis://{text}"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise InvalidArgument(f"Redis address {address!r} is not host:port or redis://host:port")
    if db is not None:
        parts = parts._replace(path=f"/{db}")
    return urlunsplit(parts)


async def connect(
    address: str,
    *,
    db: int | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,  # noqa: ASYNC109 - bounds connect and PING together
    command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
    decode_responses: bool = False,
) -> Redis:
    """Connect to Redis and prove it answers.

    Args:
        address: `host:port` or a `redis://` URL.
        db: Database number (tests use one per test).
        timeout: Bound on connecting plus the first PING.
        command_timeout: Socket timeout of every later command. Pub/sub reads are exempt
            (redis-py waits for messages without it); raise it, or pass None and wrap calls
            in `asyncio.timeout`, for blocking commands such as `XREAD BLOCK`.
        decode_responses: Return `str` instead of `bytes`.

    Returns:
        A connected client; the caller closes it with `await client.aclose()`.

    Raises:
        InvalidArgument: The address is malformed.
        Unavailable: Redis did not answer PING within `timeout`.
    """
    url = redis_url(address, db=db)
    client = Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=command_timeout,
        decode_responses=decode_responses,
    )
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as err:
        await client.aclose()
        reason = " ".join(str(err).split()) or type(err).__name__
        raise Unavailable(f"Redis at {_redacted(url)} is unreachable: {reason}") from err
    return client


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
