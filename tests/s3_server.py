"""A real S3-compatible server on 127.0.0.1 for the remote tests: moto's server mode.

``moto[server]`` and ``dvc-s3`` are test extras (``pip install -e '.[test]'``); without
them the tests that use the ``s3`` fixture are skipped, visibly. The server checks
signatures (moto's IAM authentication, switched on once the bucket and the user exist),
so wrong credentials fail the way they would on AWS.

Run it by hand to try the README's commands as a new user would::

    python -m tests.s3_server     # prints the endpoint and credentials; Ctrl-C stops it
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

BUCKET = "lenet"


@dataclass(frozen=True)
class S3Server:
    """Where the server listens and who may write to it."""

    endpoint: str          # http://127.0.0.1:PORT
    bucket: str
    access_key_id: str
    secret_access_key: str

    def client(self):
        """A boto3 S3 client with the good credentials (to look into the bucket)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_auth(endpoint: str, unauthenticated_requests: float) -> None:
    """Moto's switch: authenticate every request after the first N (inf: never)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", method="POST",
                                     data=str(unauthenticated_requests).encode(),
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).close()


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    """Start moto on a free port of 127.0.0.1 with one bucket and one IAM user; stop it after."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # Auth is off while the server is new: make the user, its key and the bucket.
        setup = dict(endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="setup", aws_secret_access_key="setup")
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="dvc")
        iam.put_user_policy(UserName="dvc", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        _set_auth(endpoint, 0)
        try:
            yield S3Server(endpoint, BUCKET, key["AccessKeyId"], key["SecretAccessKey"])
        finally:
            _set_auth(endpoint, float("inf"))  # the setting is process-wide in moto
    finally:
        server.stop()


def require_s3_extras() -> None:
    """Skip, visibly, when the test extras that talk S3 are not installed."""
    pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e '.[test]')")
    pytest.importorskip("flask", reason="moto[server] not installed (pip install -e '.[test]')")
    pytest.importorskip("dvc_s3", reason="dvc-s3 not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """A running moto S3 server with an empty bucket, for one test module."""
    require_s3_extras()
    with moto_s3() as server:
        yield server


if __name__ == "__main__":
    with moto_s3() as running:
        print(f"endpoint:          {running.endpoint}\nbucket:            {running.bucket}\n"
              f"access_key_id:     {running.access_key_id}\nsecret_access_key: {running.secret_access_key}",
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
