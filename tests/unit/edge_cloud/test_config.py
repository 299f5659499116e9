from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from edge_cloud.config import (
    CommonConfig,
    ConfigError,
    HelpRequested,
    TlsFiles,
    describe,
    help_text,
    host_port,
    load,
    option,
    split_host_port,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleConfig(CommonConfig):
    """Sample daemon settings."""

    api_addr: str = option("127.0.0.1:50051", "gRPC listen address", go="apiAddr", parse=host_port)
    notify_addrs: tuple[str, ...] = option(
        ("127.0.0.1:50001",), "Controller notify", go="notifyAddrs", parse=host_port
    )
    region: str = option("local", "region name")
    workers: int = option(4, "worker count")
    ratio: float = option(0.5, "a ratio of 100%")
    cleanup: bool = option(True, "delete leftovers", go="cleanup")
    data_dir: Path = option(Path("/var/lib/edge"), "where data goes")
    ports: tuple[int, ...] = option((), "extra ports")
    mode: Literal["fast", "safe"] = option("safe", "how to run")
    vault_addr: str | None = option(None, "Vault address", env="VAULT_ADDR")
    token: str | None = option(None, "access token", secret=True)


def test_defaults_need_no_flags_and_no_environment() -> None:
    cfg = load(SampleConfig, [], {})
    assert cfg == SampleConfig()
    assert cfg.api_addr == "127.0.0.1:50051"
    assert cfg.shutdown_grace == 10.0
    assert cfg.metrics_addr == "127.0.0.1:0"
    assert cfg.log_format == "auto"
    assert cfg.event_loop == "uvloop"
    assert cfg.tls is None


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, "local"),
        ([], {"EDGE_REGION": "env"}, "env"),
        (["--region", "flag"], {}, "flag"),
        (["--region", "flag"], {"EDGE_REGION": "env"}, "flag"),
        (["--region=flag"], {"EDGE_REGION": "env"}, "flag"),
    ],
)
def test_flag_beats_environment_beats_default(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    assert load(SampleConfig, argv, environ).region == expected


def test_load_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_REGION", "from-process")
    assert load(SampleConfig, [], {}).region == "local"


def test_kebab_flags_and_go_spellings_reach_the_same_field() -> None:
    want = ("10.0.0.1:50001", "10.0.0.2:50001")
    for argv in (
        ["--notify-addrs", "10.0.0.1:50001,10.0.0.2:50001"],
        ["-notifyAddrs", "10.0.0.1:50001,10.0.0.2:50001"],
        ["-notifyAddrs=10.0.0.1:50001, 10.0.0.2:50001"],
    ):
        assert load(SampleConfig, argv, {}).notify_addrs == want, argv
    assert (
        load(SampleConfig, [], {"EDGE_NOTIFY_ADDRS": "10.0.0.1:50001,10.0.0.2:50001"}).notify_addrs
        == want
    )
    assert load(SampleConfig, ["-apiAddr", "127.0.0.1:1"], {}).api_addr == "127.0.0.1:1"


def test_debug_families_with_the_short_flag() -> None:
    assert load(SampleConfig, ["-d", "api,notify"], {}).debug == ("api", "notify")
    assert load(SampleConfig, ["-dapi,etcd"], {}).debug == ("api", "etcd")
    assert load(SampleConfig, [], {"EDGE_DEBUG": "platform"}).debug == ("platform",)


def test_types_are_parsed_from_the_annotation() -> None:
    cfg = load(
        SampleConfig,
        ["--workers", "8", "--ratio", "0.25", "--data-dir", "/tmp/x", "--ports", "1,2,3"],
        {"EDGE_MODE": "fast", "EDGE_SHUTDOWN_GRACE": "2.5", "EDGE_READY_FILE": "/tmp/r.json"},
    )
    assert cfg.workers == 8
    assert cfg.ratio == 0.25
    assert cfg.data_dir == Path("/tmp/x")
    assert cfg.ports == (1, 2, 3)
    assert cfg.mode == "fast"
    assert cfg.shutdown_grace == 2.5
    assert cfg.ready_file == Path("/tmp/r.json")


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--cleanup"], {}, True),
        (["--cleanup=false"], {}, False),
        (["-cleanup=false"], {}, False),
        (["--cleanup", "0"], {}, False),
        ([], {"EDGE_CLEANUP": "false"}, False),
        ([], {"EDGE_CLEANUP": "0"}, False),
        ([], {"EDGE_CLEANUP": "TRUE"}, True),
        (["--cleanup=yes"], {"EDGE_CLEANUP": "false"}, True),
    ],
)
def test_booleans(argv: list[str], environ: dict[str, str], expected: bool) -> None:
    assert load(SampleConfig, argv, environ).cleanup is expected


def test_optional_values_and_standard_variable_names() -> None:
    cfg = load(SampleConfig, [], {"VAULT_ADDR": "http://127.0.0.1:8200", "EDGE_METRICS_ADDR": ""})
    assert cfg.vault_addr == "http://127.0.0.1:8200"
    assert cfg.metrics_addr is None  # an empty value means "unset": the listener is off
    assert load(SampleConfig, ["--metrics-addr", ""], {}).metrics_addr is None
    otel = load(SampleConfig, [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert otel.otel_endpoint == "http://127.0.0.1:4317"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--workers", "many"], {}, "bad value 'many' for --workers: expected a whole number"),
        (
            [],
            {"EDGE_WORKERS": "many"},
            "bad value 'many' for EDGE_WORKERS: expected a whole number",
        ),
        (["--ratio", "x"], {}, "bad value 'x' for --ratio: expected a number"),
        (["--mode", "slow"], {}, "bad value 'slow' for --mode: choose from fast, safe"),
        (["--cleanup=maybe"], {}, "bad value 'maybe' for --cleanup: expected true or false"),
        (["--api-addr", "nohost"], {}, "bad value 'nohost' for --api-addr: expected host:port"),
        ([], {"EDGE_NOTIFY_ADDRS": "a:1,b:99999"}, "for EDGE_NOTIFY_ADDRS: port '99999'"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["--regio", "x"], {}, "unrecognized arguments: --regio"),  # no prefix matching
        (["--workers"], {}, "argument --workers: expected one argument"),
        (["--tls-key", "k.pem"], {}, "--tls-cert and --tls-key go together"),
        (["--tls-ca", "ca.pem"], {}, "--tls-ca needs --tls-cert and --tls-key"),
    ],
)
def test_bad_values_raise_one_clear_line(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(SampleConfig, argv, environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_secret_values_stay_out_of_errors_and_descriptions() -> None:
    cfg = load(SampleConfig, ["--token", "s3cr3t"], {})
    assert cfg.token == "s3cr3t"
    described = describe(cfg)
    assert described["token"] == "<redacted>"
    assert described["data_dir"] == "/var/lib/edge"
    assert described["notify_addrs"] == ["127.0.0.1:50001"]
    assert "s3cr3t" not in repr(described)
    assert describe(load(SampleConfig, [], {}))["token"] is None


def test_help_lists_flags_environment_names_and_go_spellings() -> None:
    text = help_text(SampleConfig, prog="sample")
    flat = " ".join(text.split())  # argparse wraps to the terminal width
    for expected in (
        "--notify-addrs",
        "-notifyAddrs",
        "EDGE_NOTIFY_ADDRS",
        "VAULT_ADDR",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "EDGE_SHUTDOWN_GRACE",
        "-d",
        "a ratio of 100%",
        "default 127.0.0.1:50051",
        "Sample daemon settings.",
    ):
        assert expected in flat, expected
    with pytest.raises(HelpRequested) as caught:
        load(SampleConfig, ["--help"], {}, prog="sample")
    assert caught.value.text == text


def test_tls_files_come_together() -> None:
    cfg = load(SampleConfig, ["--tls-cert", "c.pem", "--tls-key", "k.pem"], {})
    assert cfg.tls == TlsFiles(Path("c.pem"), Path("k.pem"), None)
    mtls = load(
        SampleConfig,
        [],
        {"EDGE_TLS_CERT": "c.pem", "EDGE_TLS_KEY": "k.pem", "EDGE_TLS_CA": "ca.pem"},
    )
    assert mtls.tls == TlsFiles(Path("c.pem"), Path("k.pem"), Path("ca.pem"))


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:55001", ("127.0.0.1", 55001)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:50051", ("::1", 50051)),
        (":8080", ("", 8080)),
    ],
)
def test_split_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert split_host_port(addr) == expected


@pytest.mark.parametrize("addr", ["nohost", "host:", "host:http", "h:65536", "::1:80", "[zz]:1"])
def test_split_host_port_refuses(addr: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        split_host_port(addr)


def test_fields_must_be_declared_with_option() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Plain:
        name: str = "x"

    with pytest.raises(TypeError, match="option"):
        load(Plain, [], {})
