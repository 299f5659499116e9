"""`edge ctl`, `edge apply` and `edge delete` against an in-process fake Controller."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from edgeproto import (
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    flavor_pb2,
    flavor_pb2_grpc,
    result_pb2,
)

from edge_cloud.cli import main
from edge_cloud.cli._descriptors import apis
from edge_cloud.cli.ctl import DEFAULT_TIMEOUT, OPERATION_TIMEOUT, Client


class FakeFlavors(flavor_pb2_grpc.FlavorApiServicer):
    """Flavors in a dict, with the Controller's error texts."""

    def __init__(self) -> None:
        self.flavors: dict[str, flavor_pb2.Flavor] = {}
        self.updates: list[flavor_pb2.Flavor] = []

    def CreateFlavor(self, request: flavor_pb2.Flavor, context: Any) -> result_pb2.Result:
        if request.key.name in self.flavors:
            context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f'Flavor key {{"name":"{request.key.name}"}} already exists',
            )
        self.flavors[request.key.name] = request
        return result_pb2.Result()

    def UpdateFlavor(self, request: flavor_pb2.Flavor, context: Any) -> result_pb2.Result:
        self.updates.append(request)
        stored = self.flavors[request.key.name]
        if "3" in request.fields:
            stored.ram = request.ram
        return result_pb2.Result(message="Flavor updated")

    def DeleteFlavor(self, request: flavor_pb2.Flavor, context: Any) -> result_pb2.Result:
        if self.flavors.pop(request.key.name, None) is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f'Flavor key {{"name":"{request.key.name}"}} not found'
            )
        return result_pb2.Result()

    def ShowFlavor(self, request: flavor_pb2.Flavor, context: Any) -> Iterator[flavor_pb2.Flavor]:
        for name, flavor in sorted(self.flavors.items()):
            if not request.key.name or request.key.name == name:
                yield flavor


class FakeCloudlets(cloudlet_pb2_grpc.CloudletApiServicer):
    """A streamed create that reports progress, then fails."""

    def CreateCloudlet(
        self, request: cloudlet_pb2.Cloudlet, context: Any
    ) -> Iterator[result_pb2.Result]:
        yield result_pb2.Result(message="Creating Cloudlet")
        yield result_pb2.Result(message=f"Starting CRMServer for {request.key.name}")
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no CCRM for platform fake")


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeFlavors]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    flavors = FakeFlavors()
    flavor_pb2_grpc.add_FlavorApiServicer_to_server(flavors, server)
    cloudlet_pb2_grpc.add_CloudletApiServicer_to_server(FakeCloudlets(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", flavors
    finally:
        server.stop(grace=None).wait(5)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_show_update_delete(
    fake: tuple[str, FakeFlavors], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, flavors = fake
    code, out, err = run(
        capsys, "ctl", "--addr", addr, "flavor", "create", "name=x1", "ram=1024", "vcpus=1"
    )
    assert (code, out, err) == (0, "", "")
    assert flavors.flavors["x1"] == flavor_pb2.Flavor(
        key=flavor_pb2.FlavorKey(name="x1"), ram=1024, vcpus=1
    )

    code, out, _ = run(capsys, "flavor", "show", "--addr", addr)  # short form, option last
    assert code == 0
    assert out.splitlines()[0].split() == ["name", "ram", "vcpus"]
    assert out.splitlines()[1].split() == ["x1", "1024", "1"]

    code, out, _ = run(capsys, "ctl", "flavor", "show", "name=x1", "-o", "yaml", "--addr", addr)
    assert yaml.safe_load(out) == [{"key": {"name": "x1"}, "ram": 1024, "vcpus": 1}]

    code, out, _ = run(capsys, "flavor", "update", "name=x1", "ram=2048", "--addr", addr)
    assert (code, out) == (0, "Flavor updated\n")
    assert list(flavors.updates[-1].fields) == ["3"]  # ram; the key is not in the mask

    assert run(capsys, "flavor", "delete", "name=x1", "--addr", addr)[0] == 0
    code, out, err = run(capsys, "flavor", "delete", "name=x1", "--addr", addr)
    assert (code, out) == (3, "")
    assert err == 'edge: NOT_FOUND: Flavor key {"name":"x1"} not found\n'


def test_env_addr_and_already_exists(
    fake: tuple[str, FakeFlavors],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addr, _ = fake
    monkeypatch.setenv("EDGE_CTL_ADDR", addr)
    assert run(capsys, "flavor", "create", "name=x1")[0] == 0
    code, _, err = run(capsys, "flavor", "create", "name=x1")
    assert code == 4
    assert err == 'edge: ALREADY_EXISTS: Flavor key {"name":"x1"} already exists\n'


def test_streamed_progress_then_failure(
    fake: tuple[str, FakeFlavors], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _ = fake
    code, out, err = run(
        capsys,
        "cloudlet",
        "create",
        "cloudlet=paris",
        "org=op",
        "platform_type=fake",
        "--addr",
        addr,
    )
    assert code == 5
    assert out.splitlines() == ["Creating Cloudlet", "Starting CRMServer for paris"]
    assert err == "edge: FAILED_PRECONDITION: no CCRM for platform fake\n"


def test_unimplemented_rpc(
    fake: tuple[str, FakeFlavors], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _ = fake
    code, _, err = run(capsys, "zone", "show", "--addr", addr, "--timeout", "5")
    assert code == 9
    assert err.startswith("edge: UNIMPLEMENTED: ")


def test_usage_errors_send_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "flavor", "create", "colour=red", "--addr", "127.0.0.1:1")
    assert (code, out) == (2, "")
    assert err == "edge: INVALID_ARGUMENT: colour=red: Flavor has no field 'colour'\n"
    with pytest.raises(SystemExit) as exited:
        main(["ctl", "flavor", "explode"])
    assert exited.value.code == 2


def test_help_lists_objects_verbs_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ctl", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "flavor" in text
    assert "appinst" in text
    assert "exit codes:" in text
    with pytest.raises(SystemExit):
        main(["ctl", "flavor", "--help"])
    assert "addres" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["flavor", "create", "--help"])
    text = capsys.readouterr().out
    assert "key.name" in text
    assert "-> key.name" in text


def test_apply_and_delete(
    fake: tuple[str, FakeFlavors], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    addr, flavors = fake
    objects = tmp_path / "objects.yaml"
    objects.write_text("flavors:\n  - {key: {name: a}, ram: 1}\n  - {key: {name: b}, ram: 2}\n")
    code, out, _ = run(capsys, "apply", "-f", str(objects), "--addr", addr)
    assert code == 0
    assert out.splitlines() == ['Flavor {"name":"a"}: created', 'Flavor {"name":"b"}: created']

    objects.write_text("flavors:\n  - {key: {name: a}, ram: 1}\n  - {key: {name: b}, ram: 3}\n")
    code, out, _ = run(capsys, "apply", "-f", str(objects), "--addr", addr)
    assert out.splitlines() == [
        'Flavor {"name":"a"}: unchanged',
        'Flavor {"name":"b"}: updated (Ram)',
    ]
    assert flavors.flavors["b"].ram == 3

    code, out, _ = run(capsys, "delete", "-f", str(objects), "--addr", addr)
    assert out.splitlines() == ['Flavor {"name":"b"}: deleted', 'Flavor {"name":"a"}: deleted']
    code, out, _ = run(capsys, "delete", "-f", str(objects), "--addr", addr)
    assert code == 0
    assert out.splitlines() == ['Flavor {"name":"b"}: not found', 'Flavor {"name":"a"}: not found']

    objects.write_text("widgets: []\n")
    code, _, err = run(capsys, "apply", "-f", str(objects), "--addr", addr)
    assert code == 2
    assert err.startswith("edge: INVALID_ARGUMENT: ")
    assert "unknown section 'widgets'" in err


def test_deadlines_by_kind() -> None:
    flavor_api, cloudlet_api = apis()["flavor"], apis()["cloudlet"]
    default = Client("127.0.0.1:1")
    assert default.deadline(flavor_api.verbs["create"]) == DEFAULT_TIMEOUT
    assert default.deadline(flavor_api.verbs["show"]) == DEFAULT_TIMEOUT
    assert default.deadline(cloudlet_api.verbs["create"]) == OPERATION_TIMEOUT
    assert Client("127.0.0.1:1", 5).deadline(cloudlet_api.verbs["create"]) == 5
