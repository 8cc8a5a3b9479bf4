"""Headless Chromium for the report tests: open a file, hear what the page said and fetched,
take a screenshot, run JavaScript in it.

Speaks the Chrome DevTools Protocol over the browser's websocket with aiohttp's client, one
flat session per page (Target.attachToTarget with flatten). The browser is the Debian package
at /usr/bin/chromium (CI: `apt-get install chromium`); without it the calling test is skipped.

    with Chromium() as browser:
        page = browser.open(Path("out/run/report.html"))
        assert page.problems() == []
        rows = page.evaluate("document.querySelectorAll('tr').length")
        png = page.screenshot(Path("out/run/report.png"))

Each page records, from the moment it opens: console calls (Runtime.consoleAPICalled),
uncaught exceptions (Runtime.exceptionThrown), browser log entries (Log.entryAdded), every
request it made (Network.requestWillBeSent) and those that failed (Network.loadingFailed),
and any alert/confirm dialog (answered at once). The browser runs in its own process group
and a temporary profile, both gone when the `with` block ends, whatever happened in it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0"]
VIEWPORT = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}  # a laptop
TIMEOUT = 15.0  # seconds for the browser to start, a command to answer, a page to load
MAX_SHOT_HEIGHT = 16_000  # pixels; a full-page screenshot is cut there


@dataclass
class Page:
    """One open tab and what it did since it opened."""

    browser: Chromium
    target: str
    session: str
    url: str
    console: list[tuple[str, str]] = field(default_factory=list)  # (type: log/warning/error..., text)
    exceptions: list[str] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (level: verbose/info/warning/error, text)
    requests: list[str] = field(default_factory=list)  # URLs, the page's own included
    failed: list[tuple[str, str]] = field(default_factory=list)  # (URL, error)
    dialogs: list[str] = field(default_factory=list)
    loads: set[str] = field(default_factory=set)  # loader ids (navigations) whose load event fired
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _urls: dict[str, str] = field(default_factory=dict)  # requestId -> URL

    def problems(self) -> list[str]:
        """Everything a clean, self-contained page does not do, one sentence each."""
        found = [f"console.{kind}: {text}" for kind, text in self.console if kind in ("error", "warning", "assert")]
        found += [f"uncaught exception: {text}" for text in self.exceptions]
        found += [f"browser log {level}: {text}" for level, text in self.log if level in ("error", "warning")]
        found += [f"request to {url}" for url in self.requests if not self.is_itself(url)]
        found += [f"request failed: {url}: {error}" for url, error in self.failed]
        found += [f"dialog: {message}" for message in self.dialogs]
        return found

    def is_itself(self, url: str) -> bool:
        return urllib.parse.unquote(url) == urllib.parse.unquote(self.url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON gives it."""
        answer = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, self.session)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise AssertionError(
                f"{expression!r} threw: {details.get('exception', {}).get('description') or details['text']}"
            )
        return answer["result"].get("value")

    def screenshot(self, path: Path | None = None) -> bytes:
        """A PNG of the whole page (up to MAX_SHOT_HEIGHT pixels), written to `path` if given."""
        size = self.browser.call("Page.getLayoutMetrics", {}, self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_SHOT_HEIGHT), "scale": 1}
        shot = self.browser.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}, self.session
        )
        png = base64.b64decode(shot["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return png

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
            self.console.append((params["type"], text))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.exceptions.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded":
            self.log.append((params["entry"]["level"], params["entry"]["text"]))
        elif method == "Network.requestWillBeSent":
            self._urls[params["requestId"]] = params["request"]["url"]
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            self.failed.append((self._urls.get(params["requestId"], "?"), params["errorText"]))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params["message"])
            self.browser.later("Page.handleJavaScriptDialog", {"accept": False}, self.session)
        elif method == "Page.lifecycleEvent" and params["name"] == "load":
            self.loads.add(params["loaderId"])
            self._progress.set()

    async def loaded(self, loader: str) -> None:
        while loader not in self.loads:
            self._progress.clear()
            await self._progress.wait()


class Chromium:
    """A headless Chromium and one websocket to it; a context manager."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen | None = None
        self._profile: Path | None = None
        self._http: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._pages: dict[str, Page] = {}  # by session id

    def __enter__(self) -> Chromium:
        if not CHROMIUM.exists():
            pytest.skip(f"{CHROMIUM} is not installed; install it with: apt-get install chromium")
        self._loop = asyncio.new_event_loop()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self, path: Path, javascript: bool = True) -> Page:
        """A new tab showing the file at `path`, loaded (its load event fired), at VIEWPORT's size."""
        url = Path(path).resolve().as_uri()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, target, session, url)
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", {}, session)
        self.call("Page.setLifecycleEventsEnabled", {"enabled": True}, session)
        self.call("Emulation.setDeviceMetricsOverride", VIEWPORT, session)
        if not javascript:
            self.call("Emulation.setScriptExecutionDisabled", {"value": True}, session)
        navigated = self.call("Page.navigate", {"url": url}, session)
        if navigated.get("errorText"):
            raise RuntimeError(f"Chromium could not open {url}: {navigated['errorText']}")
        self._run(asyncio.wait_for(page.loaded(navigated["loaderId"]), TIMEOUT))
        self.call("Runtime.evaluate", {"expression": "0"}, session)  # every event sent before it has arrived
        return page

    def call(self, method: str, params: dict[str, Any], session: str | None = None) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer."""
        return self._run(self._call(method, params, session))

    def later(self, method: str, params: dict[str, Any], session: str | None = None) -> None:
        """Send a command without waiting (from an event handler, while the loop runs)."""
        asyncio.get_running_loop().create_task(self._call(method, params, session))

    def close(self) -> None:
        """Stop the browser, its children and the connection; remove the profile. Safe to repeat."""
        if self._process is not None:
            _stop(self._process)
            self._process = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._disconnect())
            self._loop.close()
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    # --- inside -----------------------------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None and not self._loop.is_closed(), "use Chromium in a with block"
        return self._loop.run_until_complete(coroutine)

    def _start(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="rig-chromium-"))
        stderr = (self._profile / "stderr.txt").open("wb")
        with stderr:
            self._process = subprocess.Popen(
                [str(CHROMIUM), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self._run(self._connect(self._devtools_url()))

    def _devtools_url(self) -> str:
        """The browser's websocket, from the DevToolsActivePort file Chromium writes when it listens."""
        assert self._profile is not None and self._process is not None
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            lines = active.read_text().split("\n") if active.exists() else []
            if len(lines) >= 2 and lines[1]:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        said = (self._profile / "stderr.txt").read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"Chromium did not open its DevTools port within {TIMEOUT} s "
            f"(exit code {self._process.poll()}); it said:\n{said}"
        )

    async def _connect(self, url: str) -> None:
        self._http = aiohttp.ClientSession()
        self._socket = await self._http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close()
        if self._http is not None:
            await self._http.close()

    async def _call(self, method: str, params: dict[str, Any], session: str | None) -> dict[str, Any]:
        assert self._socket is not None, "Chromium is not running"
        number = next(self._ids)
        answer = self._waiting[number] = asyncio.get_running_loop().create_future()
        message = {"id": number, "method": method, "params": params, **({"sessionId": session} if session else {})}
        await self._socket.send_str(json.dumps(message))
        try:
            return await asyncio.wait_for(answer, TIMEOUT)
        finally:
            self._waiting.pop(number, None)

    async def _read(self) -> None:
        """Hand each answer to its caller and each event to its page, until the socket closes."""
        assert self._socket is not None
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                answer = self._waiting.get(data["id"])
                if answer is None or answer.done():
                    continue
                if "error" in data:
                    answer.set_exception(
                        RuntimeError(f"DevTools: {data['error'].get('message')} {data['error'].get('data', '')}")
                    )
                else:
                    answer.set_result(data.get("result", {}))
            elif data.get("sessionId") in self._pages:
                self._pages[data["sessionId"]]._event(data["method"], data.get("params", {}))
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(RuntimeError("Chromium closed its DevTools connection"))


def _stop(process: subprocess.Popen) -> None:
    """End the browser and every process it started: SIGTERM to the process group it leads, then
    SIGKILL to whatever of the group is left after 5 s."""
    group = process.pid
    _signal(group, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (process.poll() is None or _signal(group, 0)):
        time.sleep(0.05)
    if process.poll() is None or _signal(group, 0):
        _signal(group, signal.SIGKILL)
    process.wait(5)


def _signal(group: int, number: int) -> bool:
    """Send a signal to a process group; False when the group has no process left."""
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        return False
    return True
