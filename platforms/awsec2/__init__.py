"""The AWS EC2 platform: VM-based cloudlets in an AWS region, on boto3 (see README.md)."""

from platforms.awsec2.platform import AwsEc2Platform

__all__ = ["AwsEc2Platform"]
