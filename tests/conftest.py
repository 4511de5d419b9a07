"""Shared fixtures: the real servers under tests/servers/, registered by import."""

from tests.servers.s3 import localstack_s3, moto_s3, s3_bucket, s3_endpoint

__all__ = ["localstack_s3", "moto_s3", "s3_bucket", "s3_endpoint"]
