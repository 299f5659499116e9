"""A tiny AWS front for failure tests: forwards to moto, or answers as AWS does when it refuses.

moto neither throttles nor checks keys. This proxy sits between boto3 and moto and answers
like AWS for two refusals: `ThrottlingException` (HTTP 429, rest-json, as EKS sends it) for
the next N requests matching a method and path, and `UnrecognizedClientException` (HTTP 403)
for requests signed with an access key id it does not know.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_SCOPE = re.compile(r"Credential=([^/]+)/\d+/[^/]+/([^/]+)/")
_INVALID = "The security token included in the request is invalid."


def _refuse(service: str) -> web.Response:
    """AWS's answer to an unknown access key, in the service's protocol."""
    if service == "ec2":
        body = (
            "<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to "
            "validate the provided access credentials</Message></Error></Errors>"
            "<RequestID>1</RequestID></Response>"
        )
        return web.Response(status=401, content_type="text/xml", text=body)
    if service in ("sts", "iam"):
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>"
            f"<Message>{_INVALID}</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        )
        return web.Response(status=403, content_type="text/xml", text=body)
    return web.Response(
        status=403,
        headers={"x-amzn-ErrorType": "UnrecognizedClientException"},
        content_type="application/json",
        text=json.dumps({"message": _INVALID}),
    )


@dataclass
class AwsFront:
    """Proxy state: what to refuse, and what it saw."""

    upstream: str
    known_keys: set[str] | None = None
    throttle: dict[tuple[str, str], int] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    def throttle_next(self, method: str, path: str, times: int) -> None:
        self.throttle[(method, path)] = times

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.seen if seen == (method, path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        key = (request.method, request.path)
        if self.throttle.get(key, 0) > 0:
            self.throttle[key] -= 1
            return web.Response(
                status=429,
                headers={"x-amzn-ErrorType": "ThrottlingException"},
                content_type="application/json",
                text=json.dumps({"message": "Rate exceeded"}),
            )
        found = _SCOPE.search(request.headers.get("Authorization", ""))
        if self.known_keys is not None and (found is None or found[1] not in self.known_keys):
            return _refuse(found[2] if found else "")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as reply,
        ):
            payload = await reply.read()
            out = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP}
            return web.Response(status=reply.status, body=payload, headers=out)


@asynccontextmanager
async def aws_front(upstream: str, **kwargs: object) -> AsyncIterator[AwsFront]:
    """Run an `AwsFront` on a free loopback port for the block."""
    front = AwsFront(upstream=upstream, **kwargs)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", front.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    front.url = f"http://127.0.0.1:{port}"
    try:
        yield front
    finally:
        await runner.cleanup()
