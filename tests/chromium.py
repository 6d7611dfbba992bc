"""A headless Chromium driven over its DevTools protocol, for tests that load a page.

Debian's ``chromium`` runs with a fresh profile and no background traffic; the test talks to
it over the DevTools websocket on 127.0.0.1 only. It collects what a person would see go
wrong: exceptions, console errors, log errors (a refused load included), and every request
the page makes.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import websocket

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_executable() -> str:
    """The browser to run; a test that needs it skips without it, except in CI (where
    scripts/test.sh installs it, and a missing browser is a failure)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test.sh installs it in CI)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


class Page:
    """What loading one page gave."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.facts: dict[str, Any] = {}
        self.screenshot = b""


class Chromium:
    """One headless browser process and a DevTools session on one tab.

    Args:
        profile: an empty directory for the browser's profile.
    """

    def __init__(self, profile: Path) -> None:
        self.process = subprocess.Popen(
            [chromium_executable(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        endpoint = None
        for line in self.process.stderr:  # it says where it listens, then keeps talking
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                endpoint = found.group(1)
                break
        if endpoint is None:
            raise RuntimeError(f"chromium did not start (status {self.process.wait()})")
        # What it says next is read and dropped: a full pipe would stop the browser.
        stderr = self.process.stderr
        threading.Thread(target=lambda: all(True for _ in stderr), daemon=True).start()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        try:
            self.ws = websocket.create_connection(endpoint, timeout=60, suppress_origin=True)
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise
        self.session = attached["sessionId"]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events that come first are kept)."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> None:
        """Read events until one of ``method``."""
        while not any(e["method"] == method for e in self.events):
            reply = json.loads(self.ws.recv())
            if "method" in reply:
                self.events.append(reply)

    def load(self, url: str, facts: str, width: int = 1300) -> Page:
        """Load a page, evaluate ``facts`` (a JS expression giving JSON) and take a
        screenshot of the whole page."""
        s = self.session
        self.events.clear()
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", s)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            s,
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", s, url=url)
        self.wait_for("Page.loadEventFired")
        page = Page()
        value = self.call("Runtime.evaluate", s, expression=facts, returnByValue=True)
        page.facts = json.loads(value["result"]["value"])
        shot = self.call("Page.captureScreenshot", s, format="png", captureBeyondViewport=True)
        page.screenshot = base64.b64decode(shot["data"])
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                page.errors.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                page.errors.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                page.errors.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
        return page

    def close(self) -> None:
        """Close the connection and end the browser."""
        try:
            self.ws.close()
        finally:
            self.process.kill()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
