"""The S3 doubles do what the failure tests rely on, checked with boto3 alone."""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from data.s3_doubles import HOSTILE_KEYS, REGION, MakeFaultProxy, MotoServer, s3_client

BUCKET = "doubles"
MiB = 2**20


@pytest.fixture
def bucket(moto_s3: str) -> str:
    """An empty bucket on the session's moto server, made without any proxy."""
    s3_client(moto_s3).create_bucket(Bucket=BUCKET)
    return BUCKET


def list_keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def connect(endpoint: str) -> http.client.HTTPConnection:
    parts = urlsplit(endpoint)
    assert parts.hostname is not None
    return http.client.HTTPConnection(parts.hostname, parts.port)


def test_moto_stores_and_lists_hostile_keys_verbatim(moto_s3: str, bucket: str) -> None:
    client = s3_client(moto_s3)
    for key in HOSTILE_KEYS:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())

    listed = list_keys(client, bucket)

    assert sorted(listed) == sorted(HOSTILE_KEYS)
    bodies = {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in listed}
    assert bodies == {key: key.encode() for key in HOSTILE_KEYS}


def test_moto_reset_forgets_buckets(moto_server: MotoServer, bucket: str) -> None:
    moto_server.reset()

    assert s3_client(moto_server.endpoint).list_buckets()["Buckets"] == []


def test_proxy_passes_signed_requests_through(moto_s3: str, fault_proxy: MakeFaultProxy) -> None:
    proxy = fault_proxy(moto_s3)
    client = s3_client(proxy.endpoint)

    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="/leading/slash.txt", Body=b"through the proxy")
    body = client.get_object(Bucket=BUCKET, Key="/leading/slash.txt")["Body"].read()
    size = client.head_object(Bucket=BUCKET, Key="/leading/slash.txt")["ContentLength"]
    listed = list_keys(client, BUCKET)
    client.delete_object(Bucket=BUCKET, Key="/leading/slash.txt")

    assert (body, size, listed) == (b"through the proxy", 17, ["/leading/slash.txt"])
    assert list_keys(s3_client(moto_s3), BUCKET) == []
    assert [seen.method for seen in proxy.requests] == [
        "PUT",
        "PUT",
        "GET",
        "HEAD",
        "GET",
        "DELETE",
    ]
    assert all(seen.fault is None for seen in proxy.requests)


def test_proxy_keeps_sigv4_signatures_valid(fault_proxy: MakeFaultProxy) -> None:
    """Against a moto that checks signatures: the proxy's Host must reach it unchanged."""
    with MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as checking:
        iam = boto3.client(
            "iam",
            endpoint_url=checking.endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name=REGION,
        )
        iam.create_user(UserName="tester")
        allow_all = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}  # fmt: skip
        iam.put_user_policy(
            UserName="tester", PolicyName="all", PolicyDocument=json.dumps(allow_all)
        )
        key = iam.create_access_key(UserName="tester")["AccessKey"]
        proxy = fault_proxy(checking.endpoint)

        def client(secret: str) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=proxy.endpoint,
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=secret,
                region_name=REGION,
            )

        client(key["SecretAccessKey"]).create_bucket(Bucket=BUCKET)
        with pytest.raises(ClientError) as refused:
            client("not-the-secret").list_objects_v2(Bucket=BUCKET)

    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_multipart_upload_through_proxy(
    moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(moto_s3)
    client = s3_client(proxy.endpoint)
    data = os.urandom(11 * MiB)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)

    client.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=config)

    assert client.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    targets = [seen.target for seen in proxy.requests]
    assert "/doubles/big.bin?uploads" in targets
    assert sum("partNumber=" in target for target in targets) == 3


def test_proxy_forwards_a_chunked_request_body(
    moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(moto_s3)
    connection = connect(proxy.endpoint)
    pieces = [b"a" * 100_000, b"b", b"c" * 70_000]

    connection.request("PUT", f"/{bucket}/chunked", body=iter(pieces), encode_chunked=True)
    status = connection.getresponse().status
    connection.close()

    stored = s3_client(moto_s3).get_object(Bucket=bucket, Key="chunked")["Body"].read()
    assert (status, stored) == (200, b"".join(pieces))


Seen = list[tuple[str, list[tuple[str, str]], bytes]]


class EchoServer(ThreadingHTTPServer):
    seen: Seen


class EchoHandler(BaseHTTPRequestHandler):
    """Record the request exactly as it arrived; answer with its body, chunked."""

    protocol_version = "HTTP/1.1"
    server: EchoServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.requestline, self.headers.items(), body))
        self.send_response(201)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in (body[:3], body[3:]):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer(("127.0.0.1", 0), EchoHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_proxy_forwards_requests_byte_for_byte(
    echo_server: EchoServer, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(f"http://127.0.0.1:{echo_server.server_address[1]}")
    connection = connect(proxy.endpoint)
    target = "//b/a/../%2e%2e/x?uploads&k=%2F&k=2"
    headers = [
        ("Host", "bucket.example.com:9000"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=x/y, Signature=abc"),
        ("x-amz-meta-Twice", "one"),
        ("x-amz-meta-Twice", "two"),
        ("Content-Length", "11"),
    ]

    connection.putrequest("POST", target, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders(b"hello world")
    response = connection.getresponse()
    echoed = response.read()
    connection.close()

    assert echo_server.seen == [(f"POST {target} HTTP/1.1", headers, b"hello world")]
    assert (response.status, echoed) == (201, b"hello world")


def test_slow_down_is_retried_by_boto3(
    moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(moto_s3)
    rule = proxy.slow_down(times=2, method="PUT", path=r"^/doubles/flaky$")
    client = s3_client(proxy.endpoint, attempts=3)

    client.put_object(Bucket=bucket, Key="steady", Body=io.BytesIO(b"first try"))
    assert (rule.matched, rule.injected) == (0, 0)
    # A file-like body makes botocore send ``Expect: 100-continue``.
    client.put_object(Bucket=bucket, Key="flaky", Body=io.BytesIO(b"third try"))

    assert (rule.matched, rule.injected) == (3, 2)
    assert [seen.fault for seen in proxy.requests] == [None, "slow_down", "slow_down", None]
    assert s3_client(moto_s3).get_object(Bucket=bucket, Key="flaky")["Body"].read() == b"third try"


def test_endless_slow_down_reaches_boto3_as_s3_error(
    moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(moto_s3)
    rule = proxy.slow_down(times=None)

    with pytest.raises(ClientError) as raised:
        s3_client(proxy.endpoint, attempts=2).put_object(Bucket=bucket, Key="k", Body=b"x")

    error = raised.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
        "SlowDown",
        503,
    )
    assert error["Error"]["Message"] == "Please reduce your request rate."
    assert rule.injected == 2
    assert list_keys(s3_client(moto_s3), bucket) == []


def test_reset_is_retried_by_boto3(moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy) -> None:
    s3_client(moto_s3).put_object(Bucket=bucket, Key="k", Body=b"still here")
    proxy = fault_proxy(moto_s3)
    rule = proxy.reset(times=1, method="GET")

    body = s3_client(proxy.endpoint, attempts=2).get_object(Bucket=bucket, Key="k")["Body"]

    assert body.read() == b"still here"
    assert (rule.matched, rule.injected) == (2, 1)


def test_reset_without_retries_closes_the_connection(
    moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy
) -> None:
    proxy = fault_proxy(moto_s3)
    proxy.reset(times=1)

    with pytest.raises(ConnectionClosedError):
        s3_client(proxy.endpoint, attempts=1).list_objects_v2(Bucket=bucket)


def test_delay_trips_a_read_timeout(moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy) -> None:
    s3_client(moto_s3).put_object(Bucket=bucket, Key="k", Body=b"late")
    proxy = fault_proxy(moto_s3)
    rule = proxy.delay(5, times=1, method="GET")
    client = s3_client(proxy.endpoint, attempts=1, read_timeout=0.3)

    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.get_object(Bucket=bucket, Key="k")

    assert time.monotonic() - started < 2
    assert rule.injected == 1
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"late"


def test_delayed_response_arrives_intact(
    moto_s3: str, bucket: str, fault_proxy: MakeFaultProxy
) -> None:
    s3_client(moto_s3).put_object(Bucket=bucket, Key="k", Body=b"worth the wait")
    proxy = fault_proxy(moto_s3)
    proxy.delay(0.3)

    started = time.monotonic()
    body = s3_client(proxy.endpoint).get_object(Bucket=bucket, Key="k")["Body"].read()

    assert time.monotonic() - started >= 0.3
    assert body == b"worth the wait"
