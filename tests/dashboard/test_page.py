"""The dashboard page in headless Chromium (Debian's `chromium`), driven over
the DevTools protocol: the page loads, a team created after the load shows up
within 2 s without a reload (server-sent events), a hostile task name renders
as text (no element, no script), and a screenshot is saved as an artifact
(target/dashboard-screenshot.png)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import websockets

REPO = Path(__file__).resolve().parent.parent.parent
OMK = os.path.abspath(os.environ.get("OMK_BIN") or REPO / "target" / "debug" / "omk")
AGENT = str(REPO / "target" / "debug" / "omk-scripted-agent")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="SKIPPED: no chromium (make deps installs it)")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path.resolve()
    project = root / "project"
    (project / ".omk").mkdir(parents=True)
    (project / ".omk" / "gates.toml").write_text('[[gate]]\nname = "ok"\ncommand = "true"\n')
    vars_ = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
    vars_.update(OMK_STATE_DIR=str(root / "state"), OMK_KIMI_BIN=AGENT, XDG_CONFIG_HOME=str(root / "xdg"),
                 NO_COLOR="1")
    dash = subprocess.Popen([OMK, "dashboard", "--bind", "127.0.0.1:0"], cwd=project, env=vars_,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert dash.stdout is not None
    url = dash.stdout.readline().strip().rsplit(" ", 1)[-1]
    assert url.startswith("http://127.0.0.1:"), url
    profile = root / "chromium-profile"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        yield {"url": url, "project": project, "vars": vars_, "devtools": port}
    finally:
        browser.kill()
        browser.wait()
        dash.kill()
        dash.wait()


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]
            self.events.append(msg)

    async def eval(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")


def page_ws(env: dict[str, Any]) -> str:
    """The DevTools websocket of the browser's page."""
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{env['devtools']}/json/list").read())
    return str(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))


async def open_page(ws: Any, url: str) -> Page:
    """The page on websocket ``ws``, navigated to ``url``."""
    page = Page(ws)
    await page.send("Page.enable")
    await page.send("Runtime.enable")
    await page.send("Page.navigate", url=url)
    return page


def test_page_shows_a_new_team_live_and_renders_hostile_text_as_text(env: dict[str, Any]) -> None:
    ws_url = page_ws(env)

    async def drive() -> None:
        async with websockets.connect(ws_url, max_size=64 << 20) as ws:
            page = await open_page(ws, env["url"] + "/")
            deadline = time.monotonic() + 20
            while await page.eval("document.getElementById('live') && document.getElementById('live').textContent") != "live":
                assert time.monotonic() < deadline, "the page never went live (EventSource)"
                await asyncio.sleep(0.05)
            assert await page.eval("document.querySelectorAll('[data-team]').length") == 0

            created = time.monotonic()
            r = subprocess.run(
                [OMK, "team", "run", "1:executor", HOSTILE, "--name", "hostile", "--subtask", HOSTILE],
                cwd=env["project"], env=env["vars"], capture_output=True, text=True, timeout=60,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            while not await page.eval("!!document.querySelector('[data-team=\"hostile\"]')"):
                if time.monotonic() - created > 2:
                    pytest.fail("the new team did not appear within 2 s of its creation")
                await asyncio.sleep(0.02)
            shown_after = time.monotonic() - created

            # Rendered as text: the exact string is in the page (the team's task
            # at once, its task list as it fills), no <img> exists, no dialog opened.
            card = "document.querySelector('[data-team=\"hostile\"]')"
            assert await page.eval(card + ".querySelector('.meta').textContent") == HOSTILE
            deadline = time.monotonic() + 10
            while not await page.eval("!!" + card + ".querySelector('.task-title')"):
                assert time.monotonic() < deadline, "the team's task never showed"
                await asyncio.sleep(0.05)
            title = await page.eval(card + ".querySelector('.task-title').textContent")
            assert title == HOSTILE
            assert await page.eval("document.querySelectorAll('img').length") == 0
            assert not any(e.get("method") == "Page.javascriptDialogOpening" for e in page.events)
            assert await page.eval("document.body.innerText.includes('<img src=x onerror=alert(1)>')")
            # The health badge rendered too (its fetch may finish last).
            deadline = time.monotonic() + 10
            while "omk" not in (await page.eval("document.getElementById('health').textContent") or ""):
                assert time.monotonic() < deadline, "the health badge never rendered"
                await asyncio.sleep(0.05)

            # Later changes keep arriving: the card follows the team to its end.
            deadline = time.monotonic() + 10
            while "Completed" not in await page.eval("document.querySelector('[data-team=\"hostile\"] h3').textContent"):
                assert time.monotonic() < deadline, "the team card never showed Completed"
                await asyncio.sleep(0.05)

            shot = await page.send("Page.captureScreenshot", format="png")
            out = REPO / "target" / "dashboard-screenshot.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(shot["data"]))
            print(f"team shown {shown_after * 1000:.0f} ms after its creation; screenshot: {out}")

    asyncio.run(drive())


def test_page_shows_the_clusters_pools_with_their_capacity_live(env: dict[str, Any]) -> None:
    """With ``--store``, the page draws the cluster's pools: a pool's declared
    capacity, the workers serving it and their slots, and its load as a team
    runs on the hosts. A worker joining or leaving and a new capacity show
    without a reload and without a team change (the store announces them on
    ``omk_cluster``); a team's claims show with its changes."""
    server = os.environ.get("OMK_TEST_PG_URL")
    if not server:
        pytest.skip("OMK_TEST_PG_URL is not set (make dashboard-test starts PostgreSQL)")
    db = "omk_page_" + str(os.getpid())
    subprocess.run(["psql", server, "-q", "-c", f"CREATE DATABASE {db}"], check=True)
    store = server.rsplit("/", 1)[0] + "/" + db
    root = Path(env["project"]).parent
    vars_ = env["vars"]

    def omk(*args: str) -> str:
        r = subprocess.run([OMK, *args], cwd=env["project"], env=vars_, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    omk("pools", "set", "default", "--max-workers", "1", "--store", store)
    dash = subprocess.Popen([OMK, "dashboard", "--bind", "127.0.0.1:0", "--store", store], cwd=env["project"],
                            env=vars_, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    worker: subprocess.Popen[bytes] | None = None
    try:
        assert dash.stdout is not None
        url = dash.stdout.readline().strip().rsplit(" ", 1)[-1]
        ws_url = page_ws(env)

        async def drive() -> None:
            nonlocal worker
            async with websockets.connect(ws_url, max_size=64 << 20) as ws:
                page = await open_page(ws, url + "/")
                card = "document.querySelector('[data-cluster-pool=\"default\"]')"

                async def card_text(within: float, want: str, gone: str | None = None) -> str:
                    deadline = time.monotonic() + within
                    while True:
                        text = await page.eval(f"{card} ? {card}.textContent : ''") or ""
                        if want in text and (gone is None or gone not in text):
                            return str(text)
                        assert time.monotonic() < deadline, f"no {want!r} in the cluster pool card: {text!r}"
                        await asyncio.sleep(0.05)

                text = await card_text(20, "workers: none")
                assert "capacity 1 · worker slots 0" in text, text
                # A host joins after the page loaded.
                worker = subprocess.Popen(
                    [OMK, "worker", "--store", store, "--name", "pagehost", "--max-agents", "2",
                     "--root", str(root / "host")], cwd=env["project"], env=vars_,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                text = await card_text(20, "workers: pagehost")
                assert "capacity 1 · worker slots 2" in text, text
                assert "0/1" in text, text
                # A team of two tasks on the host: the pool admits one at a
                # time, and the card follows its load live.
                omk("team", "run", "2:executor", "cluster page", "--name", "paged", "--store", store,
                    "--subtask", "[sleep:3] a", "--subtask", "[sleep:3] b", "--detach", "--json")
                text = await card_text(10, "1/1")
                assert "queued 1" in text, text
                await card_text(30, "0/1")
                # A new capacity, then the host leaving.
                omk("pools", "set", "default", "--max-workers", "3", "--store", store)
                await card_text(10, "capacity 3 · worker slots 2")
                worker.terminate()
                assert worker.wait(timeout=30) == 0
                text = await card_text(10, "workers: none")
                assert "capacity 3 · worker slots 0" in text, text

        asyncio.run(drive())
    finally:
        dash.kill()
        dash.wait()
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
