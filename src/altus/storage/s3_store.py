"""A store in an S3 bucket (``s3://bucket/prefix``): job records and anything else durable.

Every write is one PUT, which S3 applies atomically; ``create`` sends
``If-None-Match: *`` so that of two writers exactly one wins, as a hard link
does on a filesystem.

Requests go through botocore, not obstore: the local pool forks its workers,
and a process that has started obstore's (tokio) runtime cannot use it again
in a forked child — the child's first request would hang. Record objects are
small, so botocore's speed is no loss here; bulk data moves through obstore.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from altus.storage.s3 import S3Client, translate_error
from altus.storage.store import Store

__all__ = ["S3Store"]


class S3Store(Store):
    """Keys below ``prefix`` in ``bucket``, reached through ``client``."""

    def __init__(self, bucket: str, prefix: str, client: S3Client) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, key: str) -> bytes:
        try:
            response = self.client.boto.get_object(Bucket=self.bucket, Key=self.key(key))
            return bytes(response["Body"].read())
        except Exception as exc:
            raise self._error(exc, "read", key) from exc

    def write(self, key: str, data: bytes) -> None:
        try:
            self.client.boto.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)
        except Exception as exc:
            raise self._error(exc, "write", key) from exc

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.client.boto.put_object(
                Bucket=self.bucket, Key=self.key(key), Body=data, IfNoneMatch="*"
            )
        except Exception as exc:
            if _status(exc) in (409, 412):  # 409: a concurrent create is in flight
                return False
            raise self._error(exc, "create", key) from exc
        return True

    def exists(self, key: str) -> bool:
        try:
            self.client.boto.head_object(Bucket=self.bucket, Key=self.key(key))
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise self._error(exc, "check", key) from exc
        return True

    def list(self, prefix: str) -> Iterator[str]:
        start = len(self.key(""))
        for page in self._pages(self.key(prefix).rstrip("/") + "/"):
            for item in page.get("Contents", ()):
                yield item["Key"][start:]

    def children(self, prefix: str) -> Iterator[str]:
        folder = self.key(prefix).rstrip("/") + "/"
        for page in self._pages(folder, delimiter="/"):
            for item in page.get("CommonPrefixes", ()):
                yield item["Prefix"][len(folder) :]
            for item in page.get("Contents", ()):
                yield item["Key"][len(folder) :]

    def delete(self, key: str) -> None:
        try:
            self.client.boto.delete_object(Bucket=self.bucket, Key=self.key(key))
        except Exception as exc:
            raise self._error(exc, "delete", key) from exc

    def delete_tree(self, prefix: str) -> None:
        self.client.delete_keys(self.bucket, [self.key(name) for name in self.list(prefix)])

    def child(self, prefix: str) -> Store:
        return S3Store(self.bucket, self.key(prefix.strip("/")), self.client)

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        arguments = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            arguments["Delimiter"] = delimiter
        try:
            yield from self.client.boto.get_paginator("list_objects_v2").paginate(**arguments)
        except Exception as exc:
            raise translate_error(exc, "list", f"s3://{self.bucket}/{prefix}") from exc

    def _error(self, exc: BaseException, operation: str, key: str) -> BaseException:
        return translate_error(exc, operation, f"{self.url}/{key}")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None
