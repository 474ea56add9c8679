"""Headless Chromium (Debian's package) driven over the DevTools protocol with aiohttp, which faust already needs.

Enough to do what a person does: open a page, fill a form, read what is shown, take a screenshot.
No browser driver or new dependency: the protocol is JSON over one WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# Wide enough for the health page's two-column cards.
WINDOW = (1440, 1000)


def chromium_binary() -> str:
    """Debian's chromium; its absence fails the test loudly (deploy/stack.sh up installs it)."""
    found = shutil.which("chromium")
    if not found:
        pytest.fail(
            "chromium not found: the browser test needs Debian's chromium package. "
            "Install it with `bash deploy/browser.sh` (run by `bash deploy/stack.sh up`).",
            pytrace=False,
        )
    return found


class Page:
    """One browser tab over its DevTools WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events arriving meanwhile are kept for `until`."""
        self._next += 1
        ident = self._next
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive(timeout=60)).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._events.append(message)

    async def until(self, event: str, timeout: float = 60) -> None:
        """Wait for a DevTools event (e.g. Page.loadEventFired), counting those that came during a `call`."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self._events):
                if message.get("method") == event:
                    del self._events[: i + 1]
                    return
            self._events.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {event} within {timeout}s")
            self._events.append(json.loads((await self._ws.receive(timeout=left)).data))

    async def open(self, url: str) -> None:
        """Navigate and wait until the page has loaded."""
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self.until("Page.loadEventFired")

    async def js(self, expression: str) -> Any:
        """Evaluate JavaScript in the page; its JSON-able result."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        """The whole page as PNG, not only the window."""
        metrics = await self.call("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"])
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=height, deviceScaleFactor=1, mobile=False
        )
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


@asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile, and its first tab; stopped on exit."""
    log_file = (profile.parent / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [
            chromium_binary(),
            "--headless",
            "--no-sandbox",  # root has no user namespace sandbox to offer
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (profile.parent / "chromium.log").read_text(errors="replace")
                pytest.fail(f"chromium did not start (exit {proc.poll()}):\n{log[-4000:]}", pytrace=False)
            await asyncio.sleep(0.2)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            tab = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
