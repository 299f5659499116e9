"""The `awseks` platform: Kubernetes on AWS EKS through boto3 (see README.md)."""

from platforms.awseks.platform import AwsEksPlatform

__all__ = ["AwsEksPlatform"]
