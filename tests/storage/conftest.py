"""A real S3-compatible server for the storage tests: moto's server mode on a free loopback port.

Clients find it the way a user's would find their own endpoint: through the environment
(`AWS_ENDPOINT_URL_S3`, which botocore and so s3fs honour, and the usual AWS_* credentials), never
through flags. The variables are set for the test session, so `curate` and `train` subprocesses and
their Ray workers inherit them.
"""

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from curation.storage import ObjectPath

S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service for credentials
    "AWS_CONFIG_FILE": os.devnull,  # the machine's own ~/.aws files do not apply
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a moto S3 server, with the environment pointing every S3 client at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**S3_ENVIRONMENT, "AWS_ENDPOINT_URL_S3": endpoint}.items():
            patch.setenv(key, value)
        yield endpoint
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> ObjectPath:
    """A new, empty bucket for one test."""
    path = ObjectPath(f"s3://potion-{uuid.uuid4().hex[:12]}")
    path.fs.mkdir(path.path)
    return path
