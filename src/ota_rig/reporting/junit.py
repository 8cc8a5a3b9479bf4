"""JUnit XML from a run's results.json, for CI systems (GitLab, Jenkins, GitHub test reporters).

The layout is the one pytest's --junitxml writes and CI systems read: one <testsuite>, a
<testcase> per test named as pytest names it (classname `tests.ota.test_update`), with
<failure>, <error> or <skipped>; a test a signal cut short (`interrupted`) is an <error> of type
"interrupted", never a pass. The rig's facts ride along as <property> elements: the run's
(rig version, board, profiles, firmware and certificate fingerprints) on the suite, and each
scenario's (verdict, durations, expected and observed transitions, firmware, certificates, log
paths) on its test case, so a CI system that shows properties shows them all.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def render(results: dict[str, Any]) -> str:
    """The whole JUnit XML document for `results`."""
    summary = results["summary"]
    suite = ET.Element("testsuite", {
        "name": "rig", "tests": str(summary["total"]), "failures": str(summary["failed"]),
        "errors": str(summary["error"] + summary.get("interrupted", 0)), "skipped": str(summary["skipped"]),
        "time": f"{results['run']['seconds']:.3f}", "timestamp": results["run"]["started"],
        "hostname": results["rig"].get("host") or "",
    })
    _properties(suite, run_properties(results))
    for scenario in results["scenarios"]:
        _testcase(suite, scenario)
    root = ET.Element("testsuites", {"name": "rig"})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def run_properties(results: dict[str, Any]) -> list[tuple[str, Any]]:
    """The run's facts as (name, value) pairs."""
    pairs: list[tuple[str, Any]] = [
        ("rig.version", results["rig"]["version"]), ("rig.commit", results["rig"]["commit"]),
        ("esptool.version", results["rig"]["esptool"]), ("run.command", results["run"]["command"]),
    ]
    pairs += [(f"board.{key}", value) for key, value in results["board"].items()]
    for profile in results["profiles"]:
        pairs += [(f"profile.{profile['name']}.{key}", value) for key, value in profile.items() if key != "name"]
    pairs += [
        (f"firmware.{item['version']}.{item.get('profile', '')}.sha256", item["sha256"]) for item in results["firmware"]
    ]
    pairs += [(f"certificate.{item['name']}.sha256", item["sha256"]) for item in results["certificates"]]
    return pairs


def scenario_properties(scenario: dict[str, Any]) -> list[tuple[str, Any]]:
    """One scenario's facts as (name, value) pairs."""
    pairs: list[tuple[str, Any]] = [("verdict", scenario["verdict"]), ("profile", scenario.get("profile"))]
    for name, value in (scenario.get("durations") or {}).items():
        if isinstance(value, dict):
            pairs += [(f"duration.{name}.{key}", item) for key, item in value.items()]
        else:
            pairs.append((f"duration.{name}", value))
    for number, wait in enumerate(scenario.get("expected", ()), 1):
        pairs.append((f"expected.{number}", f"{wait['what']}: {wait['outcome']} at {wait['t']:.3f} s"))
    steps = [event for event in scenario.get("observed", ()) if event["transition"]]
    for number, event in enumerate(steps, 1):
        pairs.append((f"observed.{number}", f"{event['t']:.3f} s {event['transition']}"))
    for item in scenario.get("firmware", ()):
        pairs.append((f"firmware.{item['role']}.{item['version']}.sha256", item["sha256"]))
    for item in scenario.get("certificates", ()):
        pairs.append((f"certificate.{item['name']}.sha256", item["sha256"]))
    pairs += [(f"log.{name}", path) for name, path in (scenario.get("logs") or {}).items()]
    return pairs


def _testcase(suite: ET.Element, scenario: dict[str, Any]) -> None:
    module_path = scenario["id"].partition("::")[0]
    case = ET.SubElement(
        suite,
        "testcase",
        {
            "classname": module_path.removesuffix(".py").replace("/", "."),
            "name": scenario["name"],
            "time": f"{(scenario.get('durations') or {}).get('total') or 0:.3f}",
            "file": module_path,
        },
    )
    _properties(case, scenario_properties(scenario))
    verdict, message = scenario["verdict"], _clean(scenario.get("message") or "")
    if verdict == "failed":
        ET.SubElement(case, "failure", {"message": message}).text = message
    elif verdict in ("error", "interrupted"):
        ET.SubElement(case, "error", {"message": message, "type": verdict}).text = message
    elif verdict == "skipped":
        ET.SubElement(case, "skipped", {"message": message})
    transitions = " → ".join(event["transition"] for event in scenario.get("observed", ()) if event["transition"])
    logs = scenario.get("logs") or {}
    if transitions or logs:
        ET.SubElement(case, "system-out").text = _clean(
            f"{transitions or 'no transitions'}\nlogs: {logs.get('folder', '')}\n"
        )


def _properties(parent: ET.Element, pairs: list[tuple[str, Any]]) -> None:
    properties = ET.SubElement(parent, "properties")
    for name, value in pairs:
        if value is not None:
            ET.SubElement(properties, "property", {"name": name, "value": _clean(str(value))})


def _clean(text: str) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", text)
