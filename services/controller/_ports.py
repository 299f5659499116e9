"""Access-port lists of Apps: `tcp:80,udp:10000-10010:nginx,http:443:tls` (objects.md §1.9).

Two layers, as in the original: `parse_ports` (its `util.ParsePorts`) checks the syntax,
ranges, protocols, per-port options and port counts; `parse_app_ports` (its
`edgeproto.ParseAppPorts`) adds the platform's reserved ports and returns `InstPort`s, the
form AppInsts carry. Error texts are the original's, quirks included: the end of a range
that is not a number reports "base value", HTTP ports count against the UDP limit, and an
option given as `tls=false` still turns TLS on (only its name is looked at).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import appinst_pb2

from edge_cloud.errors import InvalidArgument

__all__ = [
    "RESERVED_PORTS",
    "PortSpec",
    "check_port_ambiguity",
    "lproto_name",
    "parse_app_ports",
    "parse_ports",
    "proto_string",
]

MAX_TCP_PORTS: Final = 1000
MAX_UDP_PORTS: Final = 10000
MAX_ENVOY_UDP_PORTS: Final = 1000
MAX_K8S_UDP_PORTS: Final = 1000
MIN_UDP_PKT_SIZE: Final = 1500
MAX_UDP_PKT_SIZE: Final = 50000

RESERVED_PORTS: Final = {
    "tcp:22": "Platform inter-node SSH",
    "tcp:20800": "Kubernetes master join server",
    "udp:53": "dns udp",
    "tcp:53": "dns tcp",
}
"""Ports the platform uses itself: `<proto>:<port>` → what for."""

_LPROTO: Final = {
    "tcp": appcommon_pb2.L_PROTO_TCP,
    "udp": appcommon_pb2.L_PROTO_UDP,
    "http": appcommon_pb2.L_PROTO_HTTP,
}


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One entry of an access-port list.

    Attributes:
        proto: `tcp`, `udp` or `http`, lower-cased.
        port: The (first) port.
        end_port: The last port of a range; 0 for a single port (also for `80-80`).
        tls: `tls` option (TCP and HTTP only).
        nginx: `nginx` option (UDP only; forced on when there are many UDP ports).
        max_pkt_size: `maxpktsize=N` (UDP only).
        internal_vis_only: `intvis` option: reachable inside the cluster only.
        id: `id=X`, names the port (the generated Kubernetes port name).
        path_prefix: `pathprefix=/p` (HTTP only).
        service_name: `svcname=X`, the Kubernetes service serving the port.
        host_prefix: `hostprefix=X`.
    """

    proto: str
    port: int
    end_port: int = 0
    tls: bool = False
    nginx: bool = False
    max_pkt_size: int = 0
    internal_vis_only: bool = False
    id: str = ""
    path_prefix: str = ""
    service_name: str = ""
    host_prefix: str = ""

    @property
    def last_port(self) -> int:
        """The last port of the entry (the port itself when it is not a range)."""
        return self.end_port or self.port


def parse_ports(access_ports: str) -> list[PortSpec]:
    """Parse an access-port list (the original's `util.ParsePorts`).

    Args:
        access_ports: E.g. `tcp:80,udp:1000-1010:nginx`. An empty string is malformed here;
            `parse_app_ports` accepts it as "no ports".

    Returns:
        The entries in order.

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    specs: list[PortSpec] = []
    tcp_count = udp_count = 0
    for entry in access_ports.split(","):
        parts = entry.split(":")
        if len(parts) < 2:
            raise InvalidArgument(f"invalid AccessPorts format '{entry}'")
        options = _options(parts[2:], parts[1])
        bounds = parts[1].split("-")
        base = _parse_int32(bounds[0])
        if base is None:
            raise InvalidArgument("unable to convert port range base value")
        end = base
        if len(bounds) == 2:
            parsed = _parse_int32(bounds[1])
            if parsed is None:
                raise InvalidArgument("unable to convert port range base value")
            end = parsed
        if not (1 <= base <= 65535 and 1 <= end <= 65535) or end < base:
            raise InvalidArgument("App ports out of range")
        if end == base:
            end = 0
        proto = parts[0].lower()
        if proto not in _LPROTO:
            raise InvalidArgument(f"Unsupported protocol: {parts[0]}")
        count = end - base + 1 if end else 1
        if proto == "tcp":
            tcp_count += count
        else:  # the original counts HTTP ports as UDP ones
            udp_count += count
        specs.append(_apply_options(PortSpec(proto, base, end), options, parts[1]))
    if tcp_count > MAX_TCP_PORTS:
        raise InvalidArgument(f"Not allowed to specify more than {MAX_TCP_PORTS} tcp ports")
    if udp_count > MAX_UDP_PORTS:
        raise InvalidArgument(f"Not allowed to specify more than {MAX_UDP_PORTS} udp ports")
    if udp_count > MAX_ENVOY_UDP_PORTS:
        specs = [dataclasses.replace(s, nginx=True) if s.proto == "udp" else s for s in specs]
    return specs


def parse_app_ports(access_ports: str) -> list[appinst_pb2.InstPort]:
    """An App's access ports as instance ports (the original's `ParseAppPorts`).

    Args:
        access_ports: The App's `access_ports`; empty means none.

    Returns:
        One `InstPort` per entry (`end_port` 0 unless a range).

    Raises:
        InvalidArgument: A syntax error (see `parse_ports`) or a reserved port:
            `App cannot use port tcp:22 - reserved for Platform inter-node SSH`.
    """
    if access_ports == "":
        return []
    out: list[appinst_pb2.InstPort] = []
    for spec in parse_ports(access_ports):
        for number in range(spec.port, spec.last_port + 1):
            name = f"{spec.proto}:{number}"
            reserved = RESERVED_PORTS.get(name)
            if reserved is not None:
                raise InvalidArgument(f"App cannot use port {name} - reserved for {reserved}")
        out.append(
            appinst_pb2.InstPort(
                proto=_LPROTO[spec.proto],
                internal_port=spec.port,
                end_port=spec.end_port,
                tls=spec.tls,
                nginx=spec.nginx,
                max_pkt_size=spec.max_pkt_size,
                internal_vis_only=spec.internal_vis_only,
                id=spec.id,
                path_prefix=spec.path_prefix,
                service_name=spec.service_name,
                host_prefix=spec.host_prefix,
            )
        )
    return out


def lproto_name(proto: int) -> str:
    """The enum name Go prints for an `LProto` (`L_PROTO_UDP`), or the number if unknown."""
    try:
        return appcommon_pb2.LProto.Name(proto)  # type: ignore[arg-type]  # any int is asked
    except ValueError:
        return str(proto)


def proto_string(proto: int) -> str:
    """`tcp`, `udp` or `http` for an `LProto` (the original's `LProtoStr`); `unknown` else."""
    for name, value in _LPROTO.items():
        if value == proto:
            return name
    return "unknown"


def check_port_ambiguity(ports: Iterable[appinst_pb2.InstPort]) -> None:
    """Kubernetes apps: no two visible ports may map to the same service port.

    Raises:
        InvalidArgument: `duplicate access port definitions for tcp:80, please add a service
            name substring to distinguish` (`svc/tcp:80` when a service name is given).
    """
    seen: set[tuple[str, int, str]] = set()
    for port in ports:
        if port.internal_vis_only:
            continue
        key = (proto_string(port.proto), port.internal_port, port.service_name)
        if key in seen:
            desc = f"{key[0]}:{key[1]}"
            if key[2]:
                desc = f"{key[2]}/{desc}"
            raise InvalidArgument(
                f"duplicate access port definitions for {desc}, please add a service name "
                "substring to distinguish"
            )
        seen.add(key)


# --- internals -----------------------------------------------------------------------------


def _options(items: list[str], port_text: str) -> dict[str, str]:
    """`key` or `key=value` options after the port; a boolean option reads as `true`."""
    options: dict[str, str] = {}
    for item in items:
        if item == "":
            raise InvalidArgument(
                f"invalid AccessPorts annotation {item} for port {port_text}, expected format "
                "is either key or key=val"
            )
        key, sep, value = item.partition("=")
        options[key] = value if sep else "true"
    return options


def _apply_options(spec: PortSpec, options: dict[str, str], port_text: str) -> PortSpec:
    changes: dict[str, object] = {}
    proto = spec.proto
    for key, value in options.items():
        if key == "tls":
            if proto not in ("tcp", "http"):
                raise InvalidArgument(f"Invalid protocol {proto}, not available for tls support")
            changes["tls"] = True
        elif key == "nginx":
            if proto != "udp":
                raise InvalidArgument(f'Invalid annotation "nginx" for {proto} ports')
            changes["nginx"] = True
        elif key == "maxpktsize":
            if proto != "udp":
                raise InvalidArgument(
                    f'Invalid annotation "maxpktsize" for {proto} ports, only valid for UDP '
                    "protocol"
                )
            size = _parse_int(value, 63)
            if size is None:
                raise InvalidArgument(f"unable to convert pkt size value: {value}")
            if not MIN_UDP_PKT_SIZE <= size <= MAX_UDP_PKT_SIZE:
                raise InvalidArgument(
                    f"Invalid maxpktsize, should be between range {MIN_UDP_PKT_SIZE} to "
                    f"{MAX_UDP_PKT_SIZE} (exclusive)"
                )
            changes["max_pkt_size"] = size
        elif key == "intvis":
            changes["internal_vis_only"] = True
        elif key == "id":
            changes["id"] = value
        elif key == "pathprefix":
            if proto != "http":
                raise InvalidArgument(
                    f"invalid annotation pathprefix on port {spec.port}, only allowed on http ports"
                )
            changes["path_prefix"] = value
        elif key == "svcname":
            changes["service_name"] = value
        elif key == "hostprefix":
            changes["host_prefix"] = value
        else:
            raise InvalidArgument(f"unrecognized annotation {key}={value} for port {port_text}")
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]  # names checked above


def _parse_int(text: str, bits: int) -> int | None:
    """Go's `strconv.ParseInt(text, 10, bits+1)`: optional sign, ASCII digits, in range."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    value = int(text)
    return value if -(1 << bits) <= value < (1 << bits) else None


def _parse_int32(text: str) -> int | None:
    return _parse_int(text, 31)
