"""Fixtures for tests that run real libxmtp clients against an in-process DevNode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import xmtp
from devnode_helpers import ClientFactory

from devnode import DevNode
from xmtp_supervisor import xmtp_compat


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a devnode fault test that takes over 10 s")


@pytest.fixture
def node() -> Iterator[DevNode]:
    with DevNode() as dev:
        yield dev


@pytest.fixture
async def make_client(node: DevNode) -> AsyncIterator[ClientFactory]:
    async def make() -> xmtp.Client:
        return await xmtp_compat.create_client(api_url=node.url)

    yield make
