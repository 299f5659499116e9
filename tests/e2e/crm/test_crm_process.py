"""The CRM process on its own: how it refuses bad flags and ends an unanswered handshake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_cloud import localservers
from tests.e2e.support import ROOT, clean_env

pytestmark = pytest.mark.timeout(30)


def crm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.crm", "--api-addr", "127.0.0.1:0", "--metrics-addr", "",
         *args],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=25, check=False,
    )  # fmt: skip


def test_no_cloudlet_key_is_bad_config_in_one_line() -> None:
    done = crm()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "crm: error: --cloudlet-key is required: the cloudlet this CRM serves, as JSON "
        '{"organization":"<operator>","name":"<cloudlet>"}'
    ]


def test_an_unanswered_handshake_ends_with_status_1_and_says_what_was_missing() -> None:
    port = localservers.free_port()  # nothing listens there: no Controller
    done = crm(
        "--cloudlet-key", '{"organization":"op","name":"lonely"}',
        "--notify-addrs", f"127.0.0.1:{port}", "--init-timeout", "1",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        'crm: error: CRM of cloudlet {"organization":"op","name":"lonely"}: the Controller at '
        f"127.0.0.1:{port} did not mark the cloudlet CRM_INITOK within 1s"
    ]
