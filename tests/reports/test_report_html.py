"""report.html of a real run on the twin (conftest.py's `twin_run`: three passes, a failure, an
error, a skip), read as a file and as headless Chromium shows it.

The checks hold the page against evidence the renderer did not write: results.json's verdicts
and durations, the server's own record (server.jsonl) and the UART's (serial.log)."""

from __future__ import annotations

import copy
import datetime
import html
import json
import re
import shutil
import struct
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import pytest

from ota_rig.reporting import page as report
from ota_rig.reporting import serial_log

from .chromium import Chromium, Page

UPDATE = "test_older_device_updates_reboots_and_runs_the_new_version"
BAD = ("failed", "error")
HOSTILE = "<script>alert(1)</script> & <img src=x onerror=alert(2)> &amp; \"quoted\""


# --- fixtures and helpers -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page(twin_run: tuple[Path, dict], browser: Chromium) -> Page:
    """The run's report, open in Chromium, for checks that only read it."""
    return browser.open(twin_run[0] / "report.html")


def scenario(results: dict, name: str) -> dict[str, Any]:
    return next(s for s in results["scenarios"] if s["name"].startswith(name))


def section(scenario_id: str) -> str:
    """JavaScript for the report's section of one test."""
    return f"[...document.querySelectorAll('section.scenario')].find(s => s.dataset.id === {json.dumps(scenario_id)})"


VISIBLE = "(nodes => [...nodes].filter(n => n.getClientRects().length > 0).map(n => n.dataset.id))"


class Elements(HTMLParser):
    """Every start tag of a document, with its attributes, and the text of its <style> blocks."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "style":
            self.styles.append(data)


def server_record(folder: Path, scenario: dict) -> list[dict]:
    return [json.loads(line) for line in (folder / scenario["logs"]["server"]).read_text().splitlines()]


# --- the file ------------------------------------------------------------------------------------

def test_the_report_stands_alone_and_links_only_the_runs_own_files(twin_run: tuple[Path, dict]) -> None:
    folder, results = twin_run
    text = (folder / "report.html").read_text(encoding="utf-8")
    document = Elements(text)
    tags = [tag for tag, _ in document.tags]
    assert not {"link", "img", "iframe", "object", "embed", "base", "image", "use"} & set(tags)
    assert tags.count("script") == 1 and tags.count("style") == 1
    assert [attrs for _, attrs in document.tags if "src" in attrs or "srcset" in attrs] == []
    assert not any(re.search(r"\b(?:url\(|@import)", style) for style in document.styles)
    values = [value or "" for _, attrs in document.tags for value in attrs.values()]
    assert [value for value in values if re.search(r"(?i)\b(?:https?|ftp|wss?):", value)] == []

    ids = {attrs["id"] for _, attrs in document.tags if attrs.get("id")}
    hrefs = [attrs["href"] or "" for tag, attrs in document.tags if tag == "a"]
    for href in hrefs:
        if href.startswith("#"):
            assert href[1:] in ids, f"{href} leads nowhere"
        else:
            assert not urllib.parse.urlsplit(href).scheme and not href.startswith("/"), href
            assert (folder / urllib.parse.unquote(href)).exists(), f"{href} is not a file of the run"
    linked = {urllib.parse.unquote(href) for href in hrefs}
    for each in results["scenarios"]:
        assert set((each.get("logs") or {}).values()) <= linked, f"{each['id']}: a log without a link"


# --- in the browser --------------------------------------------------------------------------------

def test_the_browser_hears_what_a_careless_page_does(browser: Chromium, tmp_path: Path) -> None:
    """The checks below can fail: a page that logs, throws, fetches and alerts is caught at each."""
    careless = tmp_path / "careless.html"
    careless.write_text("<!DOCTYPE html><title>x</title><img src=\"missing.png\">"
                        "<script>console.error('bad'); console.warn('worse'); alert('hi');"
                        " setTimeout(() => { throw new Error('boom'); });</script>")
    page = browser.open(careless)
    page.evaluate("new Promise(done => setTimeout(done, 50))")
    problems = page.problems()
    for expected in ("console.error: bad", "console.warning: worse", "dialog: hi", "Error: boom",
                     f"request to {(tmp_path / 'missing.png').as_uri()}", "request failed: "):
        assert any(expected in problem for problem in problems), (expected, problems)
    page.close()


def test_chromium_shows_it_without_a_complaint_or_a_request(twin_run: tuple[Path, dict], page: Page) -> None:
    folder, _ = twin_run
    assert page.problems() == []
    assert [urllib.parse.unquote(url) for url in page.requests] == [(folder / "report.html").resolve().as_uri()]
    png = page.screenshot(folder / "report.png")
    shutil.copy(folder / "report.png", "/tmp/report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert 1200 <= width <= 1280 and height >= 1500, (width, height)
    assert len(png) > 60_000, "a page of that size with tables, a timeline and a log is no blank PNG"


def test_the_summary_has_a_row_per_test_and_only_failures_leaves_the_failed_and_erred(
        twin_run: tuple[Path, dict], browser: Chromium) -> None:
    folder, results = twin_run
    page = browser.open(folder / "report.html")
    rows = "document.querySelectorAll('table.summary tbody tr')"
    sections = "document.querySelectorAll('section.scenario')"
    everything = [s["id"] for s in results["scenarios"]]
    failures = [s["id"] for s in results["scenarios"] if s["verdict"] in BAD]
    assert len(failures) == 2 < len(everything)  # deliberate.py's failure and error
    assert page.evaluate(f"[...{rows}].map(row => row.dataset.id)") == everything
    assert page.evaluate(f"{VISIBLE}({rows})") == everything

    page.evaluate("document.getElementById('only-failures').click()")
    assert page.evaluate(f"{VISIBLE}({rows})") == failures
    assert page.evaluate(f"{VISIBLE}({sections})") == failures
    page.evaluate("document.getElementById('only-failures').click()")
    assert page.evaluate(f"{VISIBLE}({sections})") == everything
    assert page.problems() == []
    page.close()


def test_without_javascript_everything_shows_and_the_box_does_not(
    twin_run: tuple[Path, dict], browser: Chromium
) -> None:
    folder, results = twin_run
    page = browser.open(folder / "report.html", javascript=False)
    everything = [s["id"] for s in results["scenarios"]]
    assert page.evaluate(f"{VISIBLE}(document.querySelectorAll('table.summary tbody tr'))") == everything
    assert page.evaluate(f"{VISIBLE}(document.querySelectorAll('section.scenario'))") == everything
    assert page.evaluate("document.getElementById('only-failures').getClientRects().length") == 0
    page.close()


def test_each_scenario_that_ran_has_a_timeline_and_the_download_is_the_servers(
    twin_run: tuple[Path, dict], page: Page
) -> None:
    folder, results = twin_run
    ran = [s["id"] for s in results["scenarios"] if s.get("steps") or s.get("observed") or s.get("connections")]
    assert len(ran) == 4  # the three passes and the failure; the error and the skip never ran
    drawn = page.evaluate(
        "[...document.querySelectorAll('section.scenario')]"
        ".filter(s => s.querySelector('svg.timeline')).map(s => s.dataset.id)"
    )
    assert drawn == ran

    update = scenario(results, UPDATE)
    sent = [
        (connection, request)
        for connection in server_record(folder, update)
        for request in connection["requests"]
        if request["status"] == 200
    ]
    assert len(sent) == 1, "the server sent the image once"
    connection, request = sent[0]
    assert request["bytes_sent"] == request["content_length"] == update["durations"]["download"]["bytes"]

    svg = page.evaluate(f"""(svg => ({{
        ticks: [...svg.querySelectorAll('line.tick')].map(t => [Number(t.dataset.t), t.x1.baseVal.value]),
        bars: [...svg.querySelectorAll('rect.download')].map(r => ({{
            bytes: Number(r.dataset.bytes), start: Number(r.dataset.start), end: Number(r.dataset.end),
            x: r.x.baseVal.value, width: r.width.baseVal.value,
            within: [r.closest('g.accepted').querySelector('rect.connection')].map(c =>
                [c.x.baseVal.value, c.x.baseVal.value + c.width.baseVal.value])[0] }})),
    }}))({section(update["id"])}.querySelector('svg.timeline'))""")
    (t0, x0), (t1, x1) = svg["ticks"][0], svg["ticks"][-1]
    per_second = (x1 - x0) / (t1 - t0)
    began = datetime.datetime.fromisoformat(update["started"])
    opened = (datetime.datetime.fromisoformat(connection["start"]) - began).total_seconds()
    assert [bar["bytes"] for bar in svg["bars"]] == [request["bytes_sent"]]
    bar = svg["bars"][0]
    assert bar["start"] == pytest.approx(opened + request["body_started"], abs=1e-4)
    assert bar["end"] == pytest.approx(opened + request["body_ended"], abs=1e-4)
    assert bar["x"] == pytest.approx(x0 + (opened + request["body_started"]) * per_second, abs=0.15)
    assert bar["width"] == pytest.approx(
        max(3.0, (request["body_ended"] - request["body_started"]) * per_second), abs=0.3
    )
    assert bar["within"][0] - 0.2 <= bar["x"] < bar["within"][1]

    failed = next(s for s in results["scenarios"] if s["verdict"] == "failed")
    missed = [wait for wait in failed["expected"] if wait["outcome"] == "missed"]
    assert len(missed) == 1 == page.evaluate(f"{section(failed['id'])}.querySelectorAll('svg.timeline .missed').length")


def test_a_refused_handshake_is_drawn_with_the_alert_the_server_recorded(
    twin_run: tuple[Path, dict], page: Page
) -> None:
    folder, results = twin_run
    trust = scenario(results, "test_certificate_from_another_ca_is_refused")
    alerts = [c["tls"]["alert"] for c in server_record(folder, trust) if c["tls"] and not c["tls"]["ok"]]
    assert alerts == ["unknown_ca"], "the device refused the other CA's certificate once, with its alert"
    drawn = page.evaluate(f"""(svg => ({{
        refused: svg.querySelectorAll('g.refused').length,
        labels: [...svg.querySelectorAll('text.bad')].map(t => t.textContent) }}))
        ({section(trust["id"])}.querySelector('svg.timeline'))""")
    assert drawn == {"refused": 1, "labels": ["✕ unknown_ca"]}


def test_no_two_words_of_a_timeline_overlap(twin_run: tuple[Path, dict], browser: Chromium) -> None:
    page = browser.open(twin_run[0] / "report.html")
    page.evaluate("document.querySelectorAll('details').forEach(folded => folded.open = true)")
    assert page.evaluate("document.querySelectorAll('svg.timeline text').length") > 40
    overlaps = page.evaluate("""[...document.querySelectorAll('svg.timeline')].flatMap(svg => {
        const boxes = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()]);
        return boxes.flatMap(([a, p], i) => boxes.slice(i + 1).filter(([b, q]) =>
            p.width && q.width && p.left < q.right - 0.5 && q.left < p.right - 0.5 && p.top < q.bottom - 0.5
            && q.top < p.bottom - 0.5).map(([b]) => [a, b]));
    })""")
    assert overlaps == []
    page.close()


def test_the_highlighted_serial_lines_are_the_ones_the_waits_matched(twin_run: tuple[Path, dict], page: Page) -> None:
    folder, results = twin_run
    update = scenario(results, UPDATE)
    lines = (folder / update["logs"]["serial"]).read_text(encoding="utf-8").split("\n")
    assert lines.pop() == "", "serial.log ends with a newline"
    met = sorted(wait["line"] for wait in update["expected"] if wait["outcome"] == "met")
    shown = page.evaluate(f"""[...{section(update["id"])}.querySelectorAll('pre.serial .hit')].map(line =>
        [Number(line.dataset.n), getComputedStyle(line, '::before').content, line.textContent])""")
    assert [n for n, _, _ in shown] == met
    assert [number for _, number, _ in shown] == [f'"{n}"' for n in met]  # the number the reader sees
    assert [text for _, _, text in shown] == [lines[n] for n in met]
    # What the UART itself said about the update, found in serial.log without the rig's help:
    for evidence in ("HTTP_UPDATE_OK", "Firmware version 0.2", "HTTP_UPDATE_NO_UPDATES"):
        assert [lines.index(evidence), f'"{lines.index(evidence)}"', evidence] in shown
    assert page.evaluate(f"{section(update['id'])}.querySelectorAll('pre.serial .l').length") == len(lines)


def test_device_and_server_text_is_shown_as_text(
    twin_run: tuple[Path, dict], browser: Chromium, tmp_path: Path
) -> None:
    folder, results = twin_run
    results = copy.deepcopy(results)
    update = scenario(results, UPDATE)
    update["message"] = update["doc"] = HOSTILE
    update["expected"][0]["what"] = HOSTILE
    update["observed"][-1]["transition"] = update["observed"][-1]["text"] = HOSTILE
    update["connections"][0]["peer"] = HOSTILE
    update["connections"][0]["requests"][0]["path"] = HOSTILE
    update["logs"]["serial"] = "hostile/serial.log"
    (tmp_path / "hostile").mkdir()
    (tmp_path / "hostile" / "serial.log").write_text(f"boot\n{HOSTILE}\n", encoding="utf-8")
    text = report.render(results, tmp_path)
    assert "<script>alert" not in text and "<img" not in text
    (tmp_path / "report.html").write_text(text, encoding="utf-8")

    page = browser.open(tmp_path / "report.html")
    assert page.problems() == []
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert page.evaluate("document.querySelectorAll('img, image').length") == 0
    in_section = f"{section(update['id'])}"
    assert page.evaluate(f"{in_section}.querySelector('pre.message').textContent") == HOSTILE
    assert page.evaluate(f"{in_section}.querySelector('p.doc').textContent") == HOSTILE
    assert page.evaluate(f"{in_section}.querySelector('pre.serial .l[data-n=\"1\"]').textContent") == HOSTILE
    assert page.evaluate(f"{in_section}.textContent.split({json.dumps(HOSTILE)}).length - 1") >= 5
    page.close()


# --- without a browser ---------------------------------------------------------------------------


def test_a_missing_log_is_one_line_and_a_long_one_is_cut_with_a_note(
    twin_run: tuple[Path, dict], tmp_path: Path
) -> None:
    _, results = twin_run
    results = copy.deepcopy(results)
    update, failed = scenario(results, UPDATE), next(s for s in results["scenarios"] if s["verdict"] == "failed")
    update["logs"]["serial"] = "gone/serial.log"
    failed["logs"]["serial"] = "long/serial.log"
    (tmp_path / "long").mkdir()
    count = 10_000
    (tmp_path / "long" / "serial.log").write_text("".join(f"line {n}\n" for n in range(count)))
    text = report.render(results, tmp_path)

    sections = {
        html.unescape(match["id"]): match["body"]
        for match in re.finditer(
            r'<section class="scenario [^"]*" id="s\d+" data-id="(?P<id>[^"]*)">(?P<body>.*?)</section>', text, re.S
        )
    }
    gone = sections[update["id"]]
    assert "gone/serial.log" in gone and 'class="serial"' not in gone
    long = sections[failed["id"]]
    shown = [int(n) for n in re.findall(r'class="l[^"]*"[^>]*data-n="(\d+)"', long)]
    assert 0 < len(shown) <= serial_log.MAX_LOG_LINES
    assert shown[0] == 0 and shown[-1] == count - 1 and shown == sorted(shown)
    left_out = count - len(shown)
    assert f"{left_out:,} lines" in long and 'href="long/serial.log"' in long
    assert f">line {count - 1}<" in long


def test_a_capped_server_record_says_how_many_connections_there_were(twin_run: tuple[Path, dict]) -> None:
    _, results = twin_run
    results = copy.deepcopy(results)
    update = scenario(results, UPDATE)
    update["connections_total"] = 1234  # as the flood scenario's record has it
    text = report.render(results, Path("/nonexistent"))
    assert f"{len(update['connections'])} of 1,234 connections" in text


@pytest.mark.parametrize("seconds", [0.5, 30.0])
def test_the_time_axis_fits_short_and_long_scenarios(twin_run: tuple[Path, dict], seconds: float) -> None:
    _, results = twin_run
    results = copy.deepcopy(results)
    update = scenario(results, UPDATE)
    factor = seconds / update["seconds"]
    stretch(update, factor)
    results["scenarios"] = [update]
    svg = re.search(r"<svg class=\"timeline\".*?</svg>", report.render(results, Path("/nonexistent")), re.S).group()
    ticks = [float(t) for t in re.findall(r'data-t="([^"]+)"', svg)]
    assert 4 <= len(ticks) <= 12 and ticks[0] == 0
    assert seconds <= ticks[-1] < seconds * 1.6
    width = float(re.search(r'viewBox="0 0 (\S+) ', svg).group(1))
    xs = [float(x) for x in re.findall(r'\b(?:x|x1|x2|cx)="([-\d.]+)"', svg)]
    assert min(xs) >= 0 and max(xs) <= width


def stretch(scenario: dict, factor: float) -> None:
    """The scenario as if every moment in it came `factor` times later."""
    scenario["seconds"] *= factor
    for step in scenario["steps"]:
        step["start"] *= factor
        step["end"] *= factor
    for item in scenario["observed"] + scenario["expected"]:
        item["t"] *= factor
    for connection in scenario["connections"]:
        connection["t"] *= factor
        connection["seconds"] *= factor
        if connection["tls"] and connection["tls"]["seconds"] is not None:
            connection["tls"]["seconds"] *= factor
        for request in connection["requests"]:
            for key in ("at", "body_started", "body_ended"):
                if request[key] is not None:
                    request[key] *= factor
