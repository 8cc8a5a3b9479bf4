"""A check-server run as a terminal table, a JSON document (schema `rig-check-server/1`) and
markdown for a pull-request comment."""

from __future__ import annotations

from typing import Any

from ota_rig.check.findings import BLOCKS, Finding
from ota_rig.check.server_check import Answer, ProfileCheck, ServerCheck
from ota_rig.virtual.device_client import Connection, DeviceCheck

SCHEMA = "rig-check-server/1"


def to_json(result: ServerCheck, found: list[Finding], expiry_days: int) -> dict[str, Any]:
    cert = result.certificate
    image = result.image
    return {
        "schema": SCHEMA,
        "url": result.url,
        "device_version": result.version,
        "mac": result.mac,
        "date_check": result.date_check,
        "checked_at": result.checked_at.isoformat(),
        "certificate": None if cert is None else {
            "subject": cert.subject, "issuer": cert.issuer,
            "not_before": cert.not_before.isoformat(), "not_after": cert.not_after.isoformat(),
            "days_left": round(cert.days_left(result.checked_at), 1),
            "expires_within_days": cert.days_left(result.checked_at) <= expiry_days,
            # profiles.Profile.stack_checks_dates: no stock core checks dates.
            "stock_core_notices_dates": any(c.profile.stack_checks_dates for c in result.profiles),
        },
        "certificate_error": result.certificate_error,
        "offered_image": None if image is None else {
            "bytes": len(image.data), "md5": image.md5, "x_md5": image.x_md5, "problem": image.problem,
            "chip_id": image.chip_id, "sketch_version": image.sketch_version,
        },
        "offered_version": result.offered_version,
        "offered_version_source": result.offered_version_source,
        "profiles": [_profile_json(checked) for checked in result.profiles],
        "findings": [finding.to_json() for finding in found],
        "blocking": sum(finding.severity == BLOCKS for finding in found),
    }


def _profile_json(checked: ProfileCheck) -> dict[str, Any]:
    connection = checked.update_connection
    verdict = checked.verdict
    return {
        "profile": checked.profile.name,
        "core": checked.profile.core,
        "tls": _tls_json(connection),
        "request": _request_json(connection),
        "answer": _answer_json(connection),
        "verdict": {"name": verdict.name, "line": verdict.line, "code": verdict.code, "text": verdict.text},
        "lines": checked.check.lines,
        "probes": {"old_device": _probe_json(checked.old_device),
                   "current_device": _probe_json(checked.current_device)},
    }


def _tls_json(connection: Connection | None) -> dict[str, Any] | None:
    if connection is None:
        return None
    return {
        "version": connection.tls_version, "cipher": connection.cipher, "verdict": _tls_verdict(connection),
        "alert_sent": connection.alert, "reasons": connection.reasons, "limitation": connection.limitation,
        "error": None if connection.error is None else {"code": connection.error[0], "text": connection.error[1]},
    }


def _tls_verdict(connection: Connection) -> str:
    if connection.limitation:
        return "unknown (rig limitation)"
    if connection.tls_version:
        return "chain and name accepted"
    if connection.alert:
        return "refused"
    return "failed"


def _request_json(connection: Connection | None) -> dict[str, Any] | None:
    if connection is None or not connection.request:
        return None
    first, *rest = connection.request.decode("latin-1").split("\r\n")
    headers = [[name, value.strip()] for name, _, value in (line.partition(":") for line in rest if line)]
    return {"line": first, "headers": headers}


def _answer_json(connection: Connection | None) -> dict[str, Any] | None:
    answer = Answer.from_lines(connection.header_lines) if connection else None
    if connection is None or answer is None:
        return None
    return {"status": answer.status, "reason": answer.reason, "headers": [list(h) for h in answer.headers],
            "length": answer.length, "x_md5": answer.header("x-MD5"), "framing": answer.framing,
            "body_bytes_read": len(connection.body)}


def _probe_json(device: DeviceCheck | None) -> dict[str, Any] | None:
    if device is None:
        return None
    connection = device.connections[-1] if device.connections else None
    answer = Answer.from_lines(connection.header_lines) if connection else None
    return {"version": device.version, "status": answer.status if answer else None,
            "error": None if connection is None or connection.error is None else connection.error[1]}


# --- text -------------------------------------------------------------------------------------

def text(result: ServerCheck, found: list[Finding]) -> str:
    rows = [("profile", "TLS", "chain and name", "answer", "device prints")]
    rows += [_row(checked) for checked in result.profiles]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"rig check-server {result.url}", f"device on {result.version}, MAC {result.mac}, "
             f"{'with' if result.date_check else 'without'} the sketch's date check, "
             f"{result.checked_at:%Y-%m-%d %H:%M} UTC", ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("")
    for checked in result.profiles:
        lines.append(f"{checked.profile.name} asked: {_request_line(checked.update_connection)}")
    lines += [_certificate_line(result), _image_line(result), "", _summary(found)]
    lines += [f"  [{finding.severity}] {_where(finding)}{finding.sentence}" for finding in found]
    return "\n".join(lines)


def _row(checked: ProfileCheck) -> tuple[str, str, str, str, str]:
    connection = checked.update_connection
    tls = _tls_json(connection) or {}
    negotiated = f"{tls.get('version')} {tls.get('cipher')}" if tls.get("version") else (
        f"({tls['error']['code']}) {tls['error']['text']}" if tls.get("error") else "-")
    chain = tls.get("verdict", "-")
    if tls.get("alert_sent"):
        chain += f", alert {tls['alert_sent']}"
    return (checked.profile.name, negotiated, chain, _answer_text(connection), checked.verdict.line or "(nothing)")


def _answer_text(connection: Connection | None) -> str:
    answer = _answer_json(connection)
    if answer is None:
        return "-"
    parts = [str(answer["status"])]
    if answer["length"] is not None:
        parts.append(f"{answer['length']} bytes")
    parts.append(answer["framing"])
    if answer["x_md5"]:
        parts.append(f"x-MD5 {answer['x_md5'][:8]}…")
    elif answer["status"] == 200:
        parts.append("no x-MD5")
    return ", ".join(parts)


def _request_line(connection: Connection | None) -> str:
    request = _request_json(connection)
    if request is None:
        return "(no request sent)"
    names = ", ".join(name for name, _ in request["headers"][:-1])
    last_name, last_value = request["headers"][-1]
    return f"{request['line']} with {names}, {last_name}: {last_value}"


def _certificate_line(result: ServerCheck) -> str:
    cert = result.certificate
    if cert is None:
        return f"certificate: {result.certificate_error or 'none read'}"
    days = cert.days_left(result.checked_at)
    when = f"expired {-days:.0f} days ago" if days < 0 else f"{days:.0f} days left"
    return (f"certificate: {cert.subject}, issued by {cert.issuer}, valid {cert.not_before:%Y-%m-%d} to "
            f"{cert.not_after:%Y-%m-%d} ({when}); stock cores check no dates")


def _image_line(result: ServerCheck) -> str:
    image = result.image
    if image is None:
        return "offered image: none downloaded"
    version = f", version {result.offered_version} ({result.offered_version_source})" if result.offered_version \
        else ", version unknown"
    state = image.problem or f"an app image for chip id {image.chip_id}"
    return f"offered image: {len(image.data)} bytes, MD5 {image.md5}: {state}{version}"


def _summary(found: list[Finding]) -> str:
    blocking = sum(finding.severity == BLOCKS for finding in found)
    if blocking:
        return f"{blocking} finding{'s' if blocking > 1 else ''} keep{'s' if blocking == 1 else ''} a device from " \
               f"updating ({len(found)} in all):"
    return f"no finding keeps a device from updating ({len(found)} in all){':' if found else ''}"


def _where(finding: Finding) -> str:
    return f"{finding.profile}: " if finding.profile else ""


# --- markdown ---------------------------------------------------------------------------------

def markdown(result: ServerCheck, found: list[Finding]) -> str:
    """For a pull-request comment: the verdict, the per-profile table, the findings."""
    lines = ["## OTA rig: what each ESP32 core does with the update server", "",
             f"**{_summary(found).rstrip(':')}**", "",
             f"`{_escape(result.url)}`, device on `{_escape(result.version)}`, "
             f"{result.checked_at:%Y-%m-%d %H:%M} UTC", "",
             "| Profile | TLS | Chain and name | Answer | Device prints |", "|---|---|---|---|---|"]
    for checked in result.profiles:
        name, tls, chain, answer, verdict = _row(checked)
        lines.append(f"| `{name}` | {_escape(tls)} | {_escape(chain)} | {_escape(answer)} | `{_escape(verdict)}` |")
    lines += ["", _escape(_certificate_line(result)), "", _escape(_image_line(result))]
    if found:
        lines += ["", "### Findings", ""]
        lines += [f"- **{finding.severity}** {_escape(_where(finding) + finding.sentence)}" for finding in found]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return " ".join(text.splitlines()).replace("|", "\\|")
