"""The shared AWS plumbing: credentials and how AWS failures become our errors."""

from __future__ import annotations

import botocore.exceptions
import pytest

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.platform import (
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
)
from platforms.common.aws import AwsCredentials, credentials_from, translate

KEYS = AwsCredentials("AKIAEXAMPLE", "secret", source="access vars")


def refusal(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, "Op")  # type: ignore[arg-type]


def test_access_vars_win_over_the_environment_and_missing_keys_are_named() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "e"}
    own = {"AWS_ACCESS_KEY_ID": "AKIAVAR", "AWS_SECRET_ACCESS_KEY": "v", "AWS_SESSION_TOKEN": "t"}
    assert credentials_from(own, env, "o/c") == AwsCredentials("AKIAVAR", "v", "t")
    assert credentials_from({}, env, "o/c").source == "environment"
    with pytest.raises(InvalidArgument, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        credentials_from({"AWS_ACCESS_KEY_ID": "AKIAVAR"}, {}, "o/c")
    assert "secret" not in repr(KEYS)


@pytest.mark.parametrize(
    ("code", "status", "kind", "words"),
    [
        ("RequestLimitExceeded", 503, PlatformTransientError, "still throttled after 4 attempts"),
        ("VcpuLimitExceeded", 400, PlatformResourceExhausted, "higher limit"),
        ("AuthFailure", 401, PlatformPermanentError, "key id AKIAEXAMPLE"),
        ("ExpiredToken", 400, PlatformPermanentError, "AWS_SECRET_ACCESS_KEY"),
        ("DependencyViolation", 400, PlatformTransientError, "still in use"),
        ("Whatever", 502, PlatformTransientError, "retry later"),
        ("InvalidParameterValue", 400, PlatformPermanentError, "InvalidParameterValue: m"),
    ],
)
def test_refusals_are_sorted_with_a_message_to_act_on(
    code: str, status: int, kind: type[EdgeError], words: str
) -> None:
    err = translate(refusal(code, status), "ec2 op", region="eu-west-3", credentials=KEYS)
    assert type(err) is kind
    assert words in str(err)
    assert "eu-west-3" in str(err)


def test_renewed_sessions_retry_expired_tokens_and_client_faults_are_sorted() -> None:
    renewed = translate(refusal("ExpiredToken"), "ec2 op", region="r", renewing=True)
    assert isinstance(renewed, PlatformTransientError)
    gone = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(translate(gone, "ec2 op", region="r"), PlatformTransientError)
    bad = botocore.exceptions.ParamValidationError(report="missing VpcId")
    assert isinstance(translate(bad, "ec2 op", region="r"), PlatformPermanentError)
    none = botocore.exceptions.NoCredentialsError()
    assert "AWS_ACCESS_KEY_ID" in str(translate(none, "ec2 op", region="r"))
