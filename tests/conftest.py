"""Shared fixtures: the real servers under tests/servers/, registered by import."""

from tests.backends import (
    localstack_hard_bucket,
    localstack_store_target,
    moto_hard_bucket,
    moto_obstore_store_target,
    moto_store_target,
)
from tests.servers.azure import azure_container, azure_store_target, azure_target_container, azurite
from tests.servers.gcs import fake_gcs, gcs_bucket, gcs_store_target, gcs_target_bucket
from tests.servers.s3 import faulty_s3, localstack_s3, moto_s3, s3_bucket, s3_endpoint

__all__ = [
    "azure_container",
    "azure_store_target",
    "azure_target_container",
    "azurite",
    "fake_gcs",
    "faulty_s3",
    "gcs_bucket",
    "gcs_store_target",
    "gcs_target_bucket",
    "localstack_hard_bucket",
    "localstack_s3",
    "localstack_store_target",
    "moto_hard_bucket",
    "moto_obstore_store_target",
    "moto_s3",
    "moto_store_target",
    "s3_bucket",
    "s3_endpoint",
]
