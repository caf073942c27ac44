"""The whole backend suite again, with the job record in an ``s3://`` store.

The record layout must work unchanged on S3: the local backend's workers read
the function and inputs from the bucket and commit results there, on the
session's SeaweedFS server.
"""

from __future__ import annotations

from typing import Any

import pytest

from abstract.batch import BatchBackendSuite


@pytest.fixture
def backend_name() -> str:
    return "local"


@pytest.fixture
def knot_options() -> dict[str, Any]:
    return {"workers": 2}


@pytest.fixture
def store_url(s3_env: dict[str, str], s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/jobs"


@pytest.mark.slow
class TestLocalOnS3(BatchBackendSuite):
    pass


def test_a_pool_started_before_the_credentials_were_set_still_reaches_the_store(
    tmp_path: Any, s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import altus
    from abstract import tasks

    store = tmp_path / "store"
    store.mkdir()
    assert altus.Knot(tasks.square, store=store.as_uri()).map([2]).results() == [4]
    for name, value in s3_server.environment().items():  # after the pool started
        monkeypatch.setenv(name, value)
    job = altus.Knot(tasks.env_var, store=f"s3://{s3_bucket}/jobs").map(["AWS_ENDPOINT_URL"])
    assert job.results() == [s3_server.endpoint]
