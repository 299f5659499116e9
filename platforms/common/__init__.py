"""Code shared by several platform plugins (not a plugin itself).

The AWS plugins (`awsec2`, `awseks`) share their boto3 plumbing through `platforms.common.aws`
so a fix to retries, error mapping or the instance-type catalogue lands in both at once.
"""
