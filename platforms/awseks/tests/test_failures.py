"""awseks failures: throttling (retried, then transient), refused credentials, nothing left."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from edge_cloud.localservers import ServerProcess
from edge_cloud.platform import (
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
)
from platforms.awseks._aws import AwsCredentials, EksSession
from platforms.awseks.tests.proxy import aws_front
from platforms.awseks.tests.support import (
    CREDS,
    cluster_inst,
    create_cloudlet,
    leftovers,
    make_site,
    moto_url,
    nothing,
)


async def test_throttling_is_retried_then_reported_as_transient(eks_moto: ServerProcess) -> None:
    async with aws_front(moto_url(eks_moto)) as front:
        site = await make_site(front.url, env={"AWS_MAX_ATTEMPTS": "3"})
        front.throttle_next("GET", "/clusters", 2)
        assert await site.platform.clusters.all_names() is not None
        assert front.count("GET", "/clusters") == 3  # two throttled, the third answered

        front.throttle_next("GET", "/clusters", 3)
        with pytest.raises(PlatformTransientError, match=r"ThrottlingException.*throttled"):
            await site.platform.clusters.all_names()
        assert front.count("GET", "/clusters") == 6  # three more attempts, all throttled


async def test_refused_credentials_name_the_key_and_what_to_fix(eks_moto: ServerProcess) -> None:
    async with aws_front(moto_url(eks_moto), known_keys={"AKIASOMEONEELSE00001"}) as front:
        site = await make_site(front.url)
        with pytest.raises(PlatformPermanentError) as caught:
            await create_cloudlet(site)
        message = str(caught.value)
        assert "InvalidClientTokenId" in message  # STS's word for an unknown key
        assert CREDS["AWS_ACCESS_KEY_ID"] in message
        assert "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
        assert CREDS["AWS_SECRET_ACCESS_KEY"] not in message
        assert CREDS["AWS_SECRET_ACCESS_KEY"] not in repr(site.platform.aws.credentials)


async def test_a_failed_create_removes_what_it_made(eks_moto: ServerProcess) -> None:
    async with aws_front(moto_url(eks_moto)) as front:
        site = await make_site(front.url, env={"AWS_MAX_ATTEMPTS": "1"})
        # the node group is refused after the cluster, VPC and roles exist
        front.throttle_next("POST", "/clusters/fail-devorg/node-groups", 1)
        with pytest.raises(PlatformTransientError):
            await site.platform.create_cluster_inst(cluster_inst("fail"), site.progress, timeout=60)
        assert "Cleaning up after a failed create" in site.progress.messages
        assert nothing(leftovers(eks_moto, site.tag)), leftovers(eks_moto, site.tag)

        # unless the ClusterInst asks to keep it for inspection; delete then removes it
        keep = cluster_inst("fail")
        keep.skip_crm_cleanup_on_failure = True
        front.throttle_next("POST", "/clusters/fail-devorg/node-groups", 1)
        with pytest.raises(PlatformTransientError):
            await site.platform.create_cluster_inst(keep, site.progress, timeout=60)
        assert leftovers(eks_moto, site.tag)["clusters"] == ["fail-devorg"]
        await site.platform.delete_cluster_inst(keep, site.progress)
        assert nothing(leftovers(eks_moto, site.tag))


def test_refusals_are_sorted_into_transient_exhausted_and_permanent() -> None:
    aws = EksSession(AwsCredentials("AKIAX", "secret"), "ap-southeast-2")

    def refusal(code: str) -> Exception:
        return aws.translate("ec2 delete_vpc", ClientError({"Error": {"Code": code}}, "DeleteVpc"))

    assert isinstance(refusal("DependencyViolation"), PlatformTransientError)
    assert "still in use" in str(refusal("DependencyViolation"))
    assert isinstance(refusal("Throttling"), PlatformTransientError)
    assert isinstance(refusal("LimitExceededException"), PlatformResourceExhausted)
    refused = refusal("InvalidParameterValue")
    assert type(refused) is PlatformPermanentError
    assert "InvalidParameterValue" in str(refused)
