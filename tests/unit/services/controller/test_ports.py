"""Access-port lists of Apps: syntax, options, reserved ports, limits, the original's texts."""

from __future__ import annotations

import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import appinst_pb2

from edge_cloud.errors import InvalidArgument
from services.controller import _ports


def refused(ports: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        _ports.parse_app_ports(ports)
    return caught.value.message


def test_ports_parse_into_inst_ports() -> None:
    ports = _ports.parse_app_ports("tcp:80,UDP:1000-1010,http:443:tls,tcp:7-7")
    assert ports == [
        appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_TCP, internal_port=80),
        appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_UDP, internal_port=1000, end_port=1010),
        appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_HTTP, internal_port=443, tls=True),
        appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_TCP, internal_port=7),  # 7-7 is 7
    ]
    assert _ports.parse_app_ports("") == []


def test_every_per_port_option() -> None:
    [udp, tcp, http] = _ports.parse_app_ports(
        "udp:2000:nginx:maxpktsize=1500:intvis,"
        "tcp:80:id=web:svcname=frontend:hostprefix=api,"
        "http:8080:pathprefix=/v1:tls"
    )
    assert (udp.nginx, udp.max_pkt_size, udp.internal_vis_only) == (True, 1500, True)
    assert (tcp.id, tcp.service_name, tcp.host_prefix) == ("web", "frontend", "api")
    assert (http.path_prefix, http.tls) == ("/v1", True)
    # only the option's name counts, as in the original
    assert _ports.parse_app_ports("tcp:80:tls=false")[0].tls


@pytest.mark.parametrize("ports", ["tcp:0", "tcp:65536", "udp:90-80", "tcp:1-70000", "tcp:+0"])
def test_ports_out_of_range(ports: str) -> None:
    assert refused(ports) == "App ports out of range"


def test_unsupported_protocol_keeps_the_given_spelling() -> None:
    assert refused("foo:80") == "Unsupported protocol: foo"
    assert refused("SCTP:80") == "Unsupported protocol: SCTP"
    assert refused("sctp:0") == "App ports out of range"  # the range is checked first


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ("tcp:22", "App cannot use port tcp:22 - reserved for Platform inter-node SSH"),
        (
            "tcp:20800",
            "App cannot use port tcp:20800 - reserved for Kubernetes master join server",
        ),
        ("udp:53", "App cannot use port udp:53 - reserved for dns udp"),
        ("tcp:53", "App cannot use port tcp:53 - reserved for dns tcp"),
        ("tcp:80,TCP:20-30", "App cannot use port tcp:22 - reserved for Platform inter-node SSH"),
    ],
)
def test_reserved_platform_ports(ports: str, message: str) -> None:
    assert refused(ports) == message


def test_http_53_is_not_reserved() -> None:
    assert _ports.parse_app_ports("http:53")[0].internal_port == 53


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ("tcp", "invalid AccessPorts format 'tcp'"),
        ("tcp:80,", "invalid AccessPorts format ''"),
        ("tcp:abc", "unable to convert port range base value"),
        ("tcp:80-x", "unable to convert port range base value"),  # sic: "base" for the end
        (
            "tcp:80:",
            "invalid AccessPorts annotation  for port 80, expected format is either key or key=val",
        ),
        ("udp:80:tls", "Invalid protocol udp, not available for tls support"),
        ("tcp:80:nginx", 'Invalid annotation "nginx" for tcp ports'),
        (
            "tcp:80:maxpktsize=1500",
            'Invalid annotation "maxpktsize" for tcp ports, only valid for UDP protocol',
        ),
        ("udp:80:maxpktsize=abc", "unable to convert pkt size value: abc"),
        (
            "udp:80:maxpktsize=1499",
            "Invalid maxpktsize, should be between range 1500 to 50000 (exclusive)",
        ),
        (
            "udp:80:maxpktsize=50001",
            "Invalid maxpktsize, should be between range 1500 to 50000 (exclusive)",
        ),
        (
            "tcp:80:pathprefix=/x",
            "invalid annotation pathprefix on port 80, only allowed on http ports",
        ),
        ("tcp:80:color=blue", "unrecognized annotation color=blue for port 80"),
        ("tcp:80-81:bogus", "unrecognized annotation bogus=true for port 80-81"),
    ],
)
def test_syntax_and_option_errors(ports: str, message: str) -> None:
    assert refused(ports) == message


def test_port_count_limits() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _ports.parse_ports("tcp:1-1001")
    assert caught.value.message == "Not allowed to specify more than 1000 tcp ports"
    with pytest.raises(InvalidArgument) as caught:
        _ports.parse_ports("udp:1-10001")
    assert caught.value.message == "Not allowed to specify more than 10000 udp ports"
    # the original counts HTTP ports against the UDP limit
    with pytest.raises(InvalidArgument) as caught:
        _ports.parse_ports("http:1-10001")
    assert caught.value.message == "Not allowed to specify more than 10000 udp ports"


def test_many_udp_ports_go_through_nginx() -> None:
    few = _ports.parse_ports("udp:2000-2999,tcp:80")
    assert not any(p.nginx for p in few)
    many = _ports.parse_ports("udp:2000-3000,tcp:80")
    assert [p.nginx for p in many] == [True, False]


def test_port_ambiguity_for_kubernetes() -> None:
    _ports.check_port_ambiguity(_ports.parse_app_ports("tcp:80,http:80,udp:80"))
    _ports.check_port_ambiguity(_ports.parse_app_ports("tcp:80:svcname=a,tcp:80:svcname=b"))
    _ports.check_port_ambiguity(_ports.parse_app_ports("tcp:80,tcp:80:intvis"))
    for ports, desc in (
        ("tcp:80,tcp:80", "tcp:80"),
        ("tcp:80:svcname=a,tcp:80:svcname=a", "a/tcp:80"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            _ports.check_port_ambiguity(_ports.parse_app_ports(ports))
        assert caught.value.message == (
            f"duplicate access port definitions for {desc}, please add a service name "
            "substring to distinguish"
        )


def test_lproto_names() -> None:
    assert _ports.lproto_name(appcommon_pb2.L_PROTO_UDP) == "L_PROTO_UDP"
    assert _ports.lproto_name(42) == "42"
    assert _ports.proto_string(appcommon_pb2.L_PROTO_HTTP) == "http"
