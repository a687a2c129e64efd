"""What the call layer says to a page, as typed values.

The contract between calls and pages: every message a call sends to a page is a
`PageMessage`, whose `to_json()` gives the protocol's JSON object (docs/protocol.md). The
session turns it into JSON once, when it queues it; nothing above the call layer builds a
call's message by hand.
"""

from __future__ import annotations

from typing import Any, Protocol


class PageMessage(Protocol):
    def to_json(self) -> dict[str, Any]:
        """The message as the page receives it: a JSON object with `type`."""
        ...
