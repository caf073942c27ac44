"""Fixtures for the S3 tests: one moto server per session, fault proxies per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from data.s3_doubles import FaultProxy, MakeFaultProxy, MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the whole session; use ``moto_s3`` to get it empty."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_s3(moto_server: MotoServer) -> str:
    """The endpoint of the session's moto server, reset to hold no buckets."""
    moto_server.reset()
    return moto_server.endpoint


@pytest.fixture
def fault_proxy() -> Iterator[MakeFaultProxy]:
    """Start a ``FaultProxy`` in front of an endpoint; every one started is closed afterwards."""
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
