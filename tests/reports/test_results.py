"""results.json and junit.xml of a real run on the twin, checked against what the rig did not
write itself: pytest's own --junitxml, the twin's flash, esptool's output, the UART log and the
server's record."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ota_rig.device import printed_lines
from ota_rig.device.firmware import APP_OFFSET, parse_image
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.records.results import SCHEMA

UPDATE = "test_older_device_updates_reboots_and_runs_the_new_version[arduino-esp32-2.0]"
OTHER_CA = "test_certificate_from_another_ca_is_refused[arduino-esp32-2.0]"
SLOT_1 = 0x150000  # app1 in the default partition table: where the update goes


def scenario(results: dict, name: str) -> dict:
    return next(s for s in results["scenarios"] if s["name"] == name)


def pytest_verdicts(folder: Path) -> dict[str, str]:
    """Each test's outcome as pytest's own junit writer recorded it."""
    verdicts = {}
    for case in ET.parse(folder.parent / "pytest-junit.xml").iter("testcase"):
        kinds = {child.tag for child in case}
        verdicts[case.get("name")] = ("error" if "error" in kinds else "failed" if "failure" in kinds
                                      else "skipped" if "skipped" in kinds else "passed")
    return verdicts


def test_every_test_of_the_run_has_the_verdict_pytest_gave_it(twin_run) -> None:
    folder, results = twin_run
    assert results["schema"] == SCHEMA
    assert {s["name"]: s["verdict"] for s in results["scenarios"]} == pytest_verdicts(folder)
    assert results["summary"] == {"total": 6, "passed": 3, "failed": 1, "error": 1, "skipped": 1, "interrupted": 0}
    failed = scenario(results, "test_an_update_that_is_awaited_past_its_version[arduino-esp32-2.0]")
    assert "'firmware_version' (version='0.3') did not come within 0.5 s" in failed["message"]
    assert failed["expected"][-1]["outcome"] == "missed"
    broken = scenario(results, "test_a_scenario_whose_setup_breaks")
    assert broken["message"] == "RuntimeError: the bench is not set up (on purpose)"
    assert broken["durations"]["total"] > 0


def test_the_board_is_the_one_esptool_talked_to_and_the_device_named(twin_run) -> None:
    folder, results = twin_run
    record = scenario(results, UPDATE)
    esptool_log = (folder / record["logs"]["esptool"]).read_text()
    assert f"Chip type:          {results['board']['chip']}" in esptool_log
    assert f"MAC:                {results['board']['mac']}" in esptool_log
    first = json.loads((folder / record["logs"]["server"]).read_text().splitlines()[0])
    sent_mac = dict(first["requests"][0]["headers"])["x-ESP32-STA-MAC"]
    assert sent_mac.lower() == results["board"]["mac"]


def test_firmware_hashes_are_those_of_the_bytes_in_the_twins_flash(twin_run) -> None:
    folder, results = twin_run
    record = scenario(results, UPDATE)
    flash = (folder / record["logs"]["folder"] / "board" / "flash.bin").read_bytes()
    built = {f["version"]: f for f in record["firmware"] if f["role"] == "built"}
    (offered,) = [f for f in record["firmware"] if f["role"] == "offered"]
    assert hashlib.sha256(flash[APP_OFFSET:APP_OFFSET + built["0.1"]["size"]]).hexdigest() == built["0.1"]["sha256"]
    assert (
        hashlib.sha256(flash[SLOT_1 : SLOT_1 + offered["size"]]).hexdigest()
        == offered["sha256"]
        == built["0.2"]["sha256"]
    )
    assert {f["sha256"] for f in results["firmware"]} >= {built["0.1"]["sha256"], built["0.2"]["sha256"]}


def test_the_trusted_ca_is_the_one_built_into_the_device(twin_run) -> None:
    folder, results = twin_run
    record = scenario(results, OTHER_CA)
    flash = (folder / record["logs"]["folder"] / "board" / "flash.bin").read_bytes()
    sketch = SketchConfig.from_image(parse_image(flash[APP_OFFSET:]))
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    (ca,) = x509.load_pem_x509_certificates(sketch.ca_bundle.encode())
    trusted = [c for c in record["certificates"] if c["role"] == "trusted CA"]
    assert [c["sha256"] for c in trusted] == [hashlib.sha256(ca.public_bytes(Encoding.DER)).hexdigest()]
    servers = {c["name"]: c for c in record["certificates"] if c["role"] == "server"}
    presented = {
        json.loads(line)["tls"]["certificate"] for line in (folder / record["logs"]["server"]).read_text().splitlines()
    }
    assert presented <= set(servers)  # every certificate the server presented is listed
    assert sorted(c["issuer"] for c in servers.values()) == ["main", "other"]


def test_observed_events_are_the_lines_of_serial_log_they_point_at(twin_run) -> None:
    folder, results = twin_run
    record = scenario(results, UPDATE)
    lines = (folder / record["logs"]["serial"]).read_text().splitlines()
    for event in record["observed"]:
        line, fields = printed_lines.classify(lines[event["line"]])
        assert (line.name, fields, lines[event["line"]]) == (event["event"], event["fields"], event["text"])
    transitions = [e["transition"] for e in record["observed"] if e["transition"]]
    assert transitions == [
        "reset POWERON_RESET",
        "Firmware version 0.1",
        "HTTP_UPDATE_OK",
        "reset SW_CPU_RESET",
        "Firmware version 0.2",
        "HTTP_UPDATE_NO_UPDATES",
    ]
    met = [lines[wait["line"]] for wait in record["expected"] if wait["outcome"] == "met"]
    assert met == [
        "Firmware version 0.1",
        "HTTP_UPDATE_OK",
        "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        "Firmware version 0.2",
        "HTTP_UPDATE_NO_UPDATES",
    ]
    times = [event["t"] for event in record["observed"]]
    assert times == sorted(times)


def test_download_and_handshake_figures_are_the_servers_own(twin_run) -> None:
    folder, results = twin_run
    record = scenario(results, UPDATE)
    connections = [json.loads(line) for line in (folder / record["logs"]["server"]).read_text().splitlines()]
    (download,) = [r for c in connections for r in c["requests"] if r["status"] == 200]
    figures = record["durations"]["download"]
    assert figures["bytes"] == download["bytes_sent"] == download["content_length"]
    assert figures["seconds"] == round(download["body_ended"] - download["body_started"], 4)
    assert figures["bytes_per_second"] == round(figures["bytes"] / figures["seconds"])
    assert record["durations"]["tls_handshake"] == min(connections, key=lambda c: c["start"])["tls"]["seconds"]
    steps = record["durations"]
    # the twin's UART is unpaced: HTTP_UPDATE_OK and the new version can come in one read
    assert 0 <= steps["boot"] < steps["total"] and 0 <= steps["reboot"] < steps["total"] and steps["flash"] > 0


def test_a_refused_handshake_is_on_the_scenarios_timeline_with_its_alert(twin_run) -> None:
    _, results = twin_run
    record = scenario(results, OTHER_CA)
    refused = [c for c in record["connections"] if c["tls"] and not c["tls"]["ok"]]
    assert refused and refused[0]["tls"]["alert"] == "unknown_ca"
    tls_error = next(e for e in record["observed"] if e["event"] == "tls_error")
    assert refused[0]["t"] < tls_error["t"]  # the server saw the handshake before the UART said it failed


def test_junit_xml_names_tests_as_pytest_does_and_carries_the_facts(twin_run) -> None:
    folder, results = twin_run
    ours = ET.parse(folder / "junit.xml").getroot()
    theirs = ET.parse(folder.parent / "pytest-junit.xml").getroot()
    names = lambda root: sorted((c.get("classname"), c.get("name")) for c in root.iter("testcase"))  # noqa: E731
    assert names(ours) == names(theirs)
    suite = ours.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "6",
        "1",
        "1",
        "1",
    )
    case = next(c for c in ours.iter("testcase") if c.get("name") == UPDATE)
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    record = scenario(results, UPDATE)
    connections = (folder / record["logs"]["server"]).read_text().splitlines()
    sent = [r["bytes_sent"] for c in map(json.loads, connections) for r in c["requests"] if r["status"] == 200]
    assert properties["duration.download.bytes"] == str(sent[0])
    assert properties["observed.3"].endswith("HTTP_UPDATE_OK")
    assert properties["verdict"] == "passed" and properties["log.serial"] == record["logs"]["serial"]
    run_properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert run_properties["board.mac"] == results["board"]["mac"]
    failed = next(c for c in ours.iter("testcase") if "awaited_past" in c.get("name"))
    assert "did not come within 0.5 s" in failed.find("failure").get("message")


def test_rig_report_writes_the_same_records_again(twin_run, tmp_path: Path) -> None:
    folder, _ = twin_run
    written = {name: (folder / name).read_text() for name in ("junit.xml", "report.html")}
    done = subprocess.run(
        [sys.executable, "-m", "ota_rig.cli", "report", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(folder / "junit.xml"), str(folder / "report.html")]
    assert {name: (folder / name).read_text() for name in written} == written


def test_a_report_written_elsewhere_links_the_runs_logs_from_there(twin_run, tmp_path: Path) -> None:
    folder, results = twin_run
    out = tmp_path / "elsewhere"
    done = subprocess.run(
        [sys.executable, "-m", "ota_rig.cli", "report", str(folder / "results.json"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    serial_paths = [
        p.get("value") for p in ET.parse(out / "junit.xml").iter("property") if p.get("name") == "log.serial"
    ]
    assert len(serial_paths) == sum(1 for s in results["scenarios"] if "serial" in s.get("logs", {})) == 4
    for path in serial_paths:
        assert (out / path).read_text().startswith("ets ")  # the ROM banner: the log itself
    assert "HTTP_UPDATE_OK" in (out / "report.html").read_text()  # the logs were found and shown


def test_an_unreadable_scenario_record_is_named_and_the_verdict_kept(tmp_path: Path) -> None:
    from ota_rig.pytest_plugin.interrupt import Interrupt
    from ota_rig.records.recorder import RunRecorder

    folder = tmp_path / "scenarios" / "test_x.test_y"
    folder.mkdir(parents=True)
    (folder / "scenario.json").write_text('{"observed": [')  # a run killed while writing it
    recorder = RunRecorder(tmp_path, tmp_path / "scenarios", "virtual", {}, Interrupt())
    for when in ("setup", "call", "teardown"):
        recorder.pytest_runtest_logreport(
            pytest.TestReport(
                "src/ota_rig/scenarios/test_x.py::test_y",
                ("src/ota_rig/scenarios/test_x.py", 1, "test_y"),
                {},
                "passed",
                None,
                when,
                duration=0.1,
            )
        )
    (test,) = recorder.tests.values()
    assert test["verdict"] == "passed"
    assert test["record_error"].startswith(f"{folder / 'scenario.json'} is unreadable")
