import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from edge_cloud import logs


def make_record(
    msg: str = "created %s",
    args: tuple[object, ...] = ("flavor",),
    level: int = logging.INFO,
    name: str = "edge_cloud.store",
    **extra: object,
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_the_standard_keys() -> None:
    line = logs.JsonFormatter("dme").format(make_record())
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "logger", "msg", "service"}
    assert entry["level"] == "info"
    assert entry["logger"] == "edge_cloud.store"
    assert entry["msg"] == "created flavor"
    assert entry["service"] == "dme"
    assert entry["ts"].endswith("Z")
    assert "\n" not in line


def test_json_line_carries_context_and_extras() -> None:
    with (
        logs.context(request_id="r1", method="/edgeproto.FlavorApi/CreateFlavor"),
        logs.context(key="flavor x1", request_id="r2"),
    ):
        entry = json.loads(logs.JsonFormatter("ctl").format(make_record(ports={"api": 1})))
    assert entry["request_id"] == "r2"  # the inner block wins
    assert entry["method"] == "/edgeproto.FlavorApi/CreateFlavor"
    assert entry["key"] == "flavor x1"
    assert entry["ports"] == {"api": 1}


def test_json_line_carries_the_exception() -> None:
    try:
        raise ValueError("bad flavor")
    except ValueError:
        import sys

        record = make_record(level=logging.ERROR)
        record.exc_info = sys.exc_info()
    entry = json.loads(logs.JsonFormatter("ctl").format(record))
    assert entry["level"] == "error"
    assert "Traceback" in entry["exc_info"]
    assert "ValueError: bad flavor" in entry["exc_info"]


def test_unserializable_values_become_strings() -> None:
    entry = json.loads(logs.JsonFormatter("x").format(make_record(obj=object())))
    assert entry["obj"].startswith("<object object")


def test_text_line_is_readable() -> None:
    with logs.context(key="k1"):
        line = logs.TextFormatter("dme").format(make_record())
    assert "INFO" in line
    assert "edge_cloud.store: created flavor key=k1" in line


def test_context_is_restored_after_the_block() -> None:
    assert logs.bound() == {}
    with logs.context(key="a"):
        assert logs.bound() == {"key": "a"}
        with logs.context(method="m"):
            assert logs.bound() == {"key": "a", "method": "m"}
        assert logs.bound() == {"key": "a"}
    assert logs.bound() == {}


async def test_context_does_not_leak_between_tasks() -> None:
    seen: dict[str, object] = {}
    gate = asyncio.Event()

    async def handle(request_id: str) -> None:
        with logs.context(request_id=request_id):
            await gate.wait()
            seen[request_id] = logs.bound()["request_id"]

    tasks = [asyncio.create_task(handle(f"r{i}")) for i in range(3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert seen == {"r0": "r0", "r1": "r1", "r2": "r2"}


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """Give setup() the root logger and put pytest's handlers and level back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_setup_writes_json_lines_at_the_chosen_level(root_logger: logging.Logger) -> None:
    out = io.StringIO()  # not a terminal: auto means JSON
    logs.setup("demo", "warning", "auto", stream=out)
    logging.getLogger("edge_cloud.x").info("dropped")
    logging.getLogger("edge_cloud.x").warning("kept %d", 1)
    assert [(e["msg"], e["service"]) for e in lines(out)] == [("kept 1", "demo")]


def test_setup_text_format(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    logs.setup("demo", "info", "text", stream=out)
    logging.getLogger("edge_cloud.x").info("hello")
    assert out.getvalue().rstrip().endswith("edge_cloud.x: hello")


def test_debug_families_open_debug_only_for_their_loggers(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    logs.setup("ctl", "info", "json", ["notify", "etcd"], stream=out)
    logging.getLogger("edge_cloud.notify.client").debug("notify debug")
    logging.getLogger("edge_cloud.store").debug("store debug")  # etcd family
    logging.getLogger("services.controller.api.flavor").debug("api debug")  # not chosen
    logging.getLogger("services.controller.api.flavor").info("api info")
    assert [e["msg"] for e in lines(out)] == ["notify debug", "store debug", "api info"]


def test_debug_all(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    logs.setup("ctl", "info", "json", ["all"], stream=out)
    logging.getLogger("anything.at.all").debug("seen")
    assert [e["msg"] for e in lines(out)] == ["seen"]


def test_setup_replaces_earlier_handlers(root_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup("a", stream=first, fmt="json")
    logs.setup("b", stream=second, fmt="json")
    logging.getLogger("edge_cloud.x").warning("once")
    assert first.getvalue() == ""
    assert [e["service"] for e in lines(second)] == ["b"]
