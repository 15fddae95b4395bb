"""A real S3 API on loopback for tests: moto's threaded server, reached through HTTP by s3fs/boto3.

``s3_server(bucket)`` starts the server on a free port, creates ``bucket``, and points the
standard AWS variables at it for the duration: dummy credentials and ``AWS_ENDPOINT_URL_S3``,
the variable botocore (and so s3fs, through aiobotocore) reads for a custom S3 endpoint, the
same one a MinIO or R2 user sets. ``~/.aws`` is hidden so the tests never pick up a real profile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    client: Any  # a boto3 S3 client on the server, to look into the bucket independently of s3fs

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the bucket, sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@contextmanager
def s3_server(bucket: str, workdir: Path) -> Iterator[S3Server]:
    # moto logs every request through werkzeug; the tests' own assertions say what matters.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "tuneline-test")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "tuneline-test-secret")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL_S3", endpoint)
            mp.setenv("AWS_CONFIG_FILE", str(workdir / "no-aws-config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-aws-credentials"))
            # s3fs keeps one filesystem per set of options: drop any bound to another endpoint.
            s3fs.S3FileSystem.clear_instance_cache()
            # Explicit endpoint: what the tests see in the bucket does not depend on s3fs's settings.
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket=bucket)
            try:
                yield S3Server(endpoint=endpoint, bucket=bucket, client=client)
            finally:
                s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()
