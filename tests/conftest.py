from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.media import aiortc_seam
from tests.support.gateway import RunningGateway, gateway_config, running_gateway


@pytest.fixture(autouse=True, scope="session")
def _aiortc_patches() -> None:
    """As at start-up: tests that build peer connections without a Gateway get the same
    aiortc as a running gateway has."""
    aiortc_seam.install()


@pytest.fixture
async def demo_gateway() -> AsyncIterator[RunningGateway]:
    """The gateway as `sipgw run` starts it with no trunk: calls reach the demo endpoint."""
    async with running_gateway(gateway_config()) as running:
        yield running
