from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import RunningGateway, gateway_config, running_gateway


@pytest.fixture
async def demo_gateway() -> AsyncIterator[RunningGateway]:
    """The gateway as `sipgw run` starts it with no trunk: calls reach the demo endpoint."""
    async with running_gateway(gateway_config()) as running:
        yield running
