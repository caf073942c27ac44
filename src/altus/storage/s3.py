"""S3 and S3-compatible object storage: options, credentials, clients, errors.

Two libraries share the work, each where it is strongest:

* **botocore** resolves credentials (the whole AWS chain: environment,
  ``~/.aws`` profiles with SSO and assumed roles, instance and container
  roles) and lists and deletes objects. Its listing returns every key exactly
  as stored, which matters: a bucket may hold keys such as ``../x`` or keys
  with control characters, and one such key makes obstore's listing fail as a
  whole.
* **obstore** (Rust, releases the GIL) moves the bytes: GETs, ranged GETs,
  PUTs and multipart uploads, with retries, backoff and jitter on 5xx
  (including 503 SlowDown), dropped connections and timeouts.

Errors from both are translated here into one line naming the operation, the
bucket and the key; credentials never appear in them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from altus.errors import ConfigError, StoreError
from altus.storage.store import redact

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["S3Client", "S3Options", "translate_error"]

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 600.0
"""Seconds one transfer request may take in all: generous, since a stall is caught sooner."""
MAX_RETRIES = 10
"""obstore's retries of one transfer request (throttling, 5xx, dropped connections)."""
DELETE_BATCH = 1000
"""Keys per DeleteObjects request, S3's limit."""
LISTING_ATTEMPTS = 3
"""botocore's attempts per listing or delete request: enough for throttling, and a dead
endpoint fails within seconds (botocore waits up to 2, then 4 s) rather than minutes."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3: which credentials, which endpoint, which region.

    Unset fields fall back to the standard AWS settings (``AWS_PROFILE``,
    ``AWS_ENDPOINT_URL``, ``AWS_REGION`` and the ``~/.aws`` files).
    """

    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    """Unsigned requests, for public buckets (``--no-sign-request``)."""
    read_timeout: float = 30.0
    """Seconds without a byte before a request counts as stalled and is retried."""


@dataclass
class S3Client:
    """Clients for one set of options, made once and passed around."""

    options: S3Options = field(default_factory=S3Options)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _boto: Any = None
    _stores: dict[str, S3Store] = field(default_factory=dict)
    _credentials: Any = None
    _region: str | None = None

    @property
    def endpoint_url(self) -> str | None:
        return (
            self.options.endpoint_url
            or self.environ.get("AWS_ENDPOINT_URL_S3")
            or self.environ.get("AWS_ENDPOINT_URL")
            or None
        )

    @property
    def boto(self) -> Any:
        """A botocore S3 client (listing, deleting, buckets)."""
        if self._boto is None:
            self._boto = self._make_boto_client()
        return self._boto

    def delete_keys(self, bucket: str, keys: Sequence[str]) -> None:
        """Delete ``keys`` with DeleteObjects, ``DELETE_BATCH`` at a time; a key S3 would
        not delete raises, naming it."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            try:
                answer = self.boto.delete_objects(
                    Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as exc:
                raise translate_error(exc, "remove", f"s3://{bucket}/{batch[0]['Key']}") from exc
            for error in answer.get("Errors", ()):
                raise StoreError(f"remove s3://{bucket}/{error['Key']}: {error.get('Code')}")

    def store(self, bucket: str) -> S3Store:
        """An obstore store for one bucket (transfers)."""
        if bucket not in self._stores:
            self._stores[bucket] = self._make_store(bucket)
        return self._stores[bucket]

    def region_for(self, bucket: str) -> str:
        """The configured region, or the bucket's own (asked once), or us-east-1."""
        if self._region is None:
            self._region = (
                self.options.region
                or self.environ.get("AWS_REGION")
                or self.environ.get("AWS_DEFAULT_REGION")
                or None
            )
            if self._region is None and self.static_credentials() is None:
                self._session()  # a profile may name one
        if self._region:
            return self._region
        if self.endpoint_url:
            return DEFAULT_REGION
        return self._detect_region(bucket)

    def static_credentials(self) -> dict[str, str] | None:
        """Keys set in the environment, with no profile asked for: used as they are, so
        that a command moving data need not load botocore at all (0.2 s)."""
        if self.options.anon or self.options.profile or self.environ.get("AWS_PROFILE"):
            return None
        key = self.environ.get("AWS_ACCESS_KEY_ID")
        secret = self.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        credentials = {"access_key_id": key, "secret_access_key": secret}
        if self.environ.get("AWS_SESSION_TOKEN"):
            credentials["token"] = self.environ["AWS_SESSION_TOKEN"]
        return credentials

    # -- making clients -----------------------------------------------------------------

    def _session(self) -> Any:
        import botocore.exceptions
        import botocore.session

        try:
            session = botocore.session.Session(profile=self.options.profile)
            self._region = self.options.region or session.get_config_variable("region")
            if not self.options.anon and self._credentials is None:
                self._credentials = session.get_credentials()
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS profile {self.options.profile!r} is not configured") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ConfigError(f"AWS settings: {redact(str(exc))}") from None
        return session

    def _make_boto_client(self) -> Any:
        from botocore import UNSIGNED
        from botocore.config import Config

        session = self._session()
        config = Config(
            signature_version=UNSIGNED if self.options.anon else None,
            retries={"mode": "standard", "max_attempts": LISTING_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=self.options.read_timeout,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
            max_pool_connections=32,
        )
        self._require_credentials()
        return session.create_client(
            "s3",
            region_name=self._region or DEFAULT_REGION,
            endpoint_url=self.endpoint_url,
            config=config,
        )

    def _make_store(self, bucket: str) -> S3Store:
        from obstore.store import S3Store

        return S3Store(bucket, **self.obstore_settings(bucket))

    def obstore_settings(self, bucket: str) -> dict[str, Any]:
        """``config``, ``client_options``, ``retry_config`` and ``credential_provider`` for
        obstore (its stores and its fsspec filesystem take the same four)."""
        endpoint = self.endpoint_url
        config: dict[str, Any] = {"region": self.region_for(bucket)}
        if endpoint:
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False
        if self.options.anon:
            config["skip_signature"] = True
        static = self.static_credentials()
        if static:
            config.update(static)
        return {
            "config": config,
            "client_options": {
                "connect_timeout": timedelta(seconds=CONNECT_TIMEOUT),
                "read_timeout": timedelta(seconds=self.options.read_timeout),
                "timeout": timedelta(seconds=REQUEST_TIMEOUT),
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
            },
            "retry_config": {
                "max_retries": MAX_RETRIES,
                "retry_timeout": timedelta(minutes=3),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=15),
                    "base": 2,
                },
            },
            "credential_provider": None
            if self.options.anon or static
            else self._credential_provider(),
        }

    def _credential_provider(self) -> Callable[[], dict[str, Any]]:
        self._session()
        credentials = self._require_credentials()

        def provide() -> dict[str, Any]:
            frozen = credentials.get_frozen_credentials()
            return {
                "access_key_id": frozen.access_key,
                "secret_access_key": frozen.secret_key,
                "token": frozen.token,
                "expires_at": datetime.now(UTC) + timedelta(minutes=10),
            }

        return provide

    def _require_credentials(self) -> Any:
        if self.options.anon:
            return None
        if self._credentials is None:
            raise ConfigError(
                "no AWS credentials found (environment, ~/.aws or an instance role); "
                "for a public bucket use --anon"
            )
        return self._credentials

    def _detect_region(self, bucket: str) -> str:
        """Ask S3 where the bucket lives (HEAD answers with x-amz-bucket-region, even 403)."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"https://{bucket}.s3.amazonaws.com/", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
                region = response.headers.get("x-amz-bucket-region")
        except urllib.error.HTTPError as exc:
            region = exc.headers.get("x-amz-bucket-region")
        except OSError:
            region = None
        self._region = region or DEFAULT_REGION
        return self._region


def translate_error(exc: BaseException, operation: str, where: str) -> BaseException:
    """One line for an S3 failure: ``FileNotFoundError``/``PermissionError`` where they
    fit, else ``StoreError``; the original is kept as ``__cause__`` only for ``--debug``."""
    code, status, detail = _describe(exc)
    where, detail = redact(where), redact(detail)
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        if code == "NoSuchBucket":
            return FileNotFoundError(f"{operation} {where}: no such bucket")
        return FileNotFoundError(f"{operation} {where}: not found")
    if code == "NoSuchBucket":
        return FileNotFoundError(f"{operation} {where}: no such bucket")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") or (
        status in (401, 403)
    ):
        return PermissionError(f"{operation} {where}: access denied ({code or status})")
    return StoreError(f"{operation} {where}: {detail}")


def _describe(exc: BaseException) -> tuple[str, int | None, str]:
    """(error code, HTTP status, one-line detail) of a botocore or obstore error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code", ""))
        return code, status, f"{code}: {error.get('Message', '')}".strip(": ")
    name = type(exc).__name__
    text = str(exc).split("\n", 1)[0]
    answered = re.search(r"status code: (\d{3})", str(exc))
    if answered:  # obstore: the server answered; its S3 error code says the most
        found = re.search(r"<Code>([^<]+)</Code>", str(exc))
        s3_code = found[1] if found else answered[1]
        return s3_code, int(answered[1]), s3_code
    if name in ("NotFoundError", "FileNotFoundError"):
        return "NotFound", 404, text
    if name in ("PermissionDeniedError", "UnauthenticatedError"):
        return "AccessDenied", 403, text
    if "NoSuchBucket" in str(exc):
        return "NoSuchBucket", 404, text
    if name == "EndpointConnectionError":
        endpoint = _host(str(getattr(exc, "kwargs", {}).get("endpoint_url", "")))
        return "", None, f"cannot connect to {endpoint or 'the endpoint'}"
    full = str(exc)
    if "kind: Connect" in full or "tcp connect error" in full or "connect" in text.lower():
        host = re.search(r"https?://[^/\s?]+", full)
        return "", None, f"cannot connect to {_host(host[0]) if host else 'the endpoint'}"
    if "HTTP error" in text or "Error performing" in text:  # obstore: keep the reason, not the URL
        return "", None, _short(text.rsplit(" - ", 1)[-1])
    return "", None, _short(text)


def _host(url: str) -> str:
    """``host:port`` of ``url``, never its ``user:password@``."""
    return redact(url).partition("://")[2].split("/", 1)[0]


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
