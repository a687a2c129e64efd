from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import RunningGateway, running_gateway, gateway_config


@pytest.fixture
async def demo_gateway() -> AsyncIterator[RunningGateway]:
    """The gateway as `sipgw run` starts it with no trunk: calls reach the demo endpoint."""
    async with running_gateway(gateway_config()) as running:
        yield running
