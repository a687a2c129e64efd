"""Regenerate docs/softphone-connected.png: the page during a connected call to 600.

unshare -n sh -c 'ip link set lo up && exec python3 scripts/screenshot.py'
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.audio import write_tone_wav  # noqa: E402
from tests.support.browser import launch_browser, wait_for_tone  # noqa: E402
from tests.support.sipgw_process import sipgw_run  # noqa: E402


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_tone_wav(Path(tmp) / "mic.wav", 1000, seconds=30)
        async with sipgw_run() as gateway, launch_browser(wav) as browser:
            page = await browser.new_page(viewport={"width": 900, "height": 760})
            await page.goto(gateway.url)
            await page.wait_for_selector("#state[data-state=ready]")
            await page.fill("#number", "600")
            await page.click("#call")
            await page.wait_for_selector("#state[data-state=connected]")
            await wait_for_tone(page, 1000)
            await page.wait_for_timeout(2500)  # let the call timer and level meter move
            await page.screenshot(path=str(ROOT / "docs" / "softphone-connected.png"))
            await page.click("#hangup")


if __name__ == "__main__":
    asyncio.run(main())
