"""ota_rig.reporting.compare and `rig compare`: the real run of the twin (conftest.py) compared with itself and
with copies of it changed the way a regression, a fix or a new tool would change it.

The command-line tests run `python -m ota_rig.cli compare` as a CI job does and read its exit
status, stdout, stderr and markdown file; the rules' edges are checked on compare() itself."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ota_rig.reporting.compare import MIN_SECONDS, CompareError, TimingChange, VerdictChange, compare

ROOT = Path(__file__).resolve().parents[2]
UPDATE = "test_older_device_updates_reboots_and_runs_the_new_version"  # passes in the twin run
OTHER_CA = "test_certificate_from_another_ca_is_refused"  # passes
AWAITED = "test_an_update_that_is_awaited_past_its_version"  # fails, on purpose
SKIPPED = "test_a_scenario_skipped_for_want_of_a_board"


def rig_compare(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ota_rig.cli", "compare", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def saved(results: dict, folder: Path) -> Path:
    """`results` written as folder/results.json."""
    folder.mkdir(parents=True)
    path = folder / "results.json"
    path.write_text(json.dumps(results))
    return path


def scenario(results: dict, name: str) -> dict:
    return next(s for s in results["scenarios"] if name in s["id"])


def compact(results: dict, name: str) -> str:
    """How the comparison names a scenario: module::name."""
    found = scenario(results, name)
    return f"{found['module']}::{found['name']}"


def runs(twin_run) -> tuple[dict, dict]:
    """Two copies of the real results, the second to change."""
    return copy.deepcopy(twin_run[1]), copy.deepcopy(twin_run[1])


def section(text: str, title: str) -> list[str]:
    """The lines under `title:` in the terminal text."""
    return text.split(f"\n\n{title}:\n")[1].split("\n\n")[0].splitlines()


# --- through the command line ---------------------------------------------------------------

def test_a_run_compared_with_itself_is_no_regression(twin_run, tmp_path: Path) -> None:
    folder, results = twin_run
    old = saved(results, tmp_path / "old")
    new = saved(results, tmp_path / "new")
    done = rig_compare(old.parent, new)  # a run folder and a results.json: both are accepted
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.splitlines()[0] == "no regression: 6 scenarios, 0 flips, 0 slower steps"
    assert "Regressions:" not in done.stdout and "Notes:" not in done.stdout


def test_the_deliberate_regression_fails_the_command_and_names_what_got_worse(twin_run, tmp_path: Path) -> None:
    old, new = runs(twin_run)
    broken = scenario(new, OTHER_CA)
    broken.update(verdict="failed", message="AssertionError: the device took another CA's certificate (deliberate)")
    # The update's measured total, doubled; at least 1 s, so that doubling adds --min-seconds
    # (a fast machine runs it in less) and it prints in seconds.
    before = scenario(old, UPDATE)["durations"]["total"] = max(scenario(old, UPDATE)["durations"]["total"], 1.0)
    scenario(new, UPDATE)["durations"]["total"] = round(before * 2, 4)
    markdown = tmp_path / "comment.md"

    done = rig_compare(saved(old, tmp_path / "old"), saved(new, tmp_path / "new"), "--markdown", markdown)

    assert (done.returncode, done.stderr) == (1, ""), done.stdout
    text = done.stdout
    assert text.splitlines()[0] == "REGRESSED: 1 scenario flipped to failed, 1 step slower than 2x"
    slower = f"total {before:.2f} s → {before * 2:.2f} s"
    assert section(text, "Regressions") == [
        f"  {compact(new, OTHER_CA)}: verdict passed → failed ({broken['message']})",
        f"  {compact(new, UPDATE)}: {slower} (2.0x slower)",
    ]
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| `")]
    assert rows == [
        f"| `{compact(new, OTHER_CA)}` | verdict | passed | failed | {broken['message']} |",
        f"| `{compact(new, UPDATE)}` | total | {before:.2f} s | {before * 2:.2f} s | 2.0x slower |",
    ]
    assert markdown.read_text().startswith("## ") and f"**{text.splitlines()[0]}**" in markdown.read_text()


def test_a_fixed_scenario_is_listed_and_alone_passes_the_command(twin_run, tmp_path: Path) -> None:
    old, new = runs(twin_run)
    scenario(new, AWAITED).update(verdict="passed", message=None)
    done = rig_compare(saved(old, tmp_path / "old"), saved(new, tmp_path / "new"), "--markdown", tmp_path / "c.md")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.splitlines()[0] == "no regression: 6 scenarios, 1 flip, 0 slower steps, 1 fixed"
    why = scenario(old, AWAITED)["message"]
    assert section(done.stdout, "Fixed") == [f"  {compact(old, AWAITED)}: verdict failed → passed ({why})"]
    assert f"### Fixed\n\n- `{compact(old, AWAITED)}`: verdict failed → passed" in (tmp_path / "c.md").read_text()


@pytest.mark.parametrize("make", [
    pytest.param(lambda folder: folder / "nowhere" / "results.json", id="missing file"),
    pytest.param(lambda folder: saved({"hello": "world"}, folder / "other"), id="not results"),
    pytest.param(lambda folder: saved({"schema": "rig-results/1"}, folder / "bare"), id="no scenarios"),
])
def test_input_that_is_not_a_run_is_one_line_on_stderr_and_exit_2(twin_run, tmp_path: Path, make) -> None:
    done = rig_compare(make(tmp_path), saved(twin_run[1], tmp_path / "new"))
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("rig: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_threshold_below_1_is_refused_in_one_sentence(twin_run, tmp_path: Path) -> None:
    path = saved(twin_run[1], tmp_path / "run")
    done = rig_compare(path, path, "--threshold", "0.8")
    assert done.returncode == 2
    assert done.stderr.startswith("rig: threshold 0.8 is not a factor of 1 or more")
    assert len(done.stderr.splitlines()) == 1


# --- verdicts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "was, now, where",
    [
        ("passed", "failed", "regressions"),
        ("passed", "error", "regressions"),
        ("skipped", "failed", "regressions"),
        ("failed", "passed", "fixes"),
        ("error", "passed", "fixes"),
        ("failed", "error", "notes"),
        ("passed", "skipped", "notes"),
        ("skipped", "passed", "notes"),
    ],
)
def test_each_flip_lands_where_the_rules_put_it(twin_run, was: str, now: str, where: str) -> None:
    old, new = runs(twin_run)
    scenario(old, UPDATE)["verdict"], scenario(new, UPDATE)["verdict"] = was, now
    comparison = compare(old, new)
    flip = VerdictChange(compact(new, UPDATE), was, now, scenario(new, UPDATE)["message"])
    assert getattr(comparison, where) == [flip]
    assert comparison.regressed is (where == "regressions")


def test_a_passing_scenario_that_vanished_is_a_regression(twin_run) -> None:
    old, new = runs(twin_run)
    new["scenarios"].remove(scenario(new, UPDATE))
    comparison = compare(old, new)
    assert comparison.summary() == "REGRESSED: 1 passing scenario gone"
    assert [(item.old, item.new, item.why) for item in comparison.regressions] == [
        ("passed", None, "no longer in the run: nothing shows it still passes")
    ]


def test_a_failing_scenario_that_vanished_is_the_first_note_and_no_fix(twin_run) -> None:
    old, new = runs(twin_run)
    new["scenarios"].remove(scenario(new, AWAITED))
    scenario(new, SKIPPED)["verdict"] = "passed"
    comparison = compare(old, new)
    assert not comparison.regressed and comparison.fixes == []
    first = comparison.notes[0]
    assert (first.scenario, first.old, first.new) == (compact(old, AWAITED), "failed", None)
    assert "its failure is hidden, not fixed" in first.why
    assert f"{compact(old, AWAITED)}: verdict failed → absent" in comparison.text()


def test_a_new_scenario_counts_only_when_it_fails(twin_run) -> None:
    old, new = runs(twin_run)
    old["scenarios"] = [s for s in old["scenarios"] if UPDATE not in s["id"] and AWAITED not in s["id"]]
    comparison = compare(old, new)
    assert comparison.summary() == "REGRESSED: 1 new scenario failing"
    assert [item.scenario for item in comparison.regressions] == [compact(new, AWAITED)]
    assert compact(new, UPDATE) in [item.scenario for item in comparison.notes]


# --- durations ------------------------------------------------------------------------------


def slower_steps(old: dict, new: dict, **settings) -> list[tuple[str, str]]:
    return [
        (item.scenario, item.what)
        for item in compare(old, new, **settings).regressions
        if isinstance(item, TimingChange)
    ]


@pytest.mark.parametrize(
    "then, now, min_seconds, slower",
    [
        (10.0, 14.0, 0.5, False),  # 1.4x, though 4 s more
        (10.0, 14.99, 0.5, False),
        (10.0, 15.0, 0.5, True),  # exactly 1.5x: growing by the factor counts
        (0.2, 0.4, 0.5, False),  # 2x, but 0.2 s
        (0.2, 0.4, 0.0, True),
        (1.0, 2.0, 1.0, True),  # exactly min_seconds more counts
        (0.7, 1.2, 0.5, True),  # 0.5 s more, whatever the float subtraction makes of it
    ],
)
def test_a_step_is_slower_only_past_both_the_factor_and_the_seconds(
    twin_run, then: float, now: float, min_seconds: float, slower: bool
) -> None:
    old, new = runs(twin_run)
    scenario(old, UPDATE)["durations"]["total"], scenario(new, UPDATE)["durations"]["total"] = then, now
    found = slower_steps(old, new, threshold=1.5, min_seconds=min_seconds)
    assert found == ([(compact(new, UPDATE), "total")] if slower else [])


def test_a_doubled_millisecond_handshake_is_noise_under_min_seconds(twin_run) -> None:
    old, new = runs(twin_run)
    handshake = scenario(new, UPDATE)["durations"]
    # Doubling adds the handshake's own time, which must stay under min_seconds: tens of
    # milliseconds on the twin (tlslite-ng), 0.27 s seen on a loaded runner.
    assert handshake["tls_handshake"] < MIN_SECONDS / 2, "the twin's handshake takes well under a second"
    handshake["tls_handshake"] *= 2
    assert slower_steps(old, new) == []
    assert slower_steps(old, new, min_seconds=0) == [(compact(new, UPDATE), "tls_handshake")]


def test_only_scenarios_that_passed_in_both_runs_are_timed(twin_run) -> None:
    old, new = runs(twin_run)
    for name in (UPDATE, AWAITED, SKIPPED):
        scenario(new, name)["durations"]["total"] = scenario(old, name)["durations"]["total"] * 10 + 10
    scenario(new, UPDATE).update(verdict="failed", message="AssertionError: on purpose")
    comparison = compare(old, new)
    assert [type(item) for item in comparison.regressions] == [VerdictChange]
    assert not any(isinstance(item, TimingChange) for item in comparison.notes)


def test_a_download_of_another_size_is_judged_by_its_rate(twin_run) -> None:
    old, new = runs(twin_run)
    was = scenario(old, UPDATE)["durations"]["download"]
    now = scenario(new, UPDATE)["durations"]["download"]
    now.update(
        bytes=was["bytes"] * 2, seconds=round(was["seconds"] * 8, 4), bytes_per_second=was["bytes_per_second"] // 4
    )
    assert slower_steps(old, new) == [], "microseconds on the twin, whatever the rate"
    [rate] = [item for item in compare(old, new, min_seconds=0).regressions if isinstance(item, TimingChange)]
    assert (rate.what, rate.why) == ("download rate", "4.0x slower")


def test_a_download_of_the_same_size_is_judged_by_its_seconds(twin_run) -> None:
    old, new = runs(twin_run)
    scenario(old, UPDATE)["durations"]["download"].update(seconds=1.0, bytes_per_second=1000)
    scenario(new, UPDATE)["durations"]["download"].update(seconds=3.0, bytes_per_second=333)
    assert slower_steps(old, new) == [(compact(new, UPDATE), "download")]


def test_a_much_faster_step_is_a_note(twin_run) -> None:
    old, new = runs(twin_run)
    # at least 1 s, so that a quarter of it saves more than --min-seconds 0.5
    before = scenario(old, UPDATE)["durations"]["total"] = max(scenario(old, UPDATE)["durations"]["total"], 1.0)
    scenario(new, UPDATE)["durations"]["total"] = round(before / 4, 4)
    comparison = compare(old, new, threshold=1.5, min_seconds=0.5)
    assert not comparison.regressed
    assert [(item.what, item.why) for item in comparison.notes] == [("total", "4.0x faster")]


# --- the run's context ----------------------------------------------------------------------


def test_a_core_upgrade_is_noted_and_named_on_the_flip_it_may_explain(twin_run) -> None:
    old, new = runs(twin_run)
    [profile] = new["profiles"]
    profile["core"], new["rig"]["esptool"] = "2.0.17", "9.9.9"
    scenario(new, UPDATE).update(verdict="failed", message="ExpectTimeout: on purpose")
    comparison = compare(old, new)
    [flip] = comparison.regressions
    assert flip.why == f"ExpectTimeout: on purpose; profile {profile['name']} core 2.0.14 → 2.0.17"
    notes = [(item.what, item.before, item.after) for item in comparison.notes]
    assert ("esptool", old["rig"]["esptool"], "9.9.9") in notes
    assert (
        f"profile {profile['name']}",
        "core 2.0.14, IDF v4.4.6-dirty, Mbed TLS 2.28.4",
        "core 2.0.17, IDF v4.4.6-dirty, Mbed TLS 2.28.4",
    ) in notes


def test_a_run_without_scenarios_is_said(twin_run) -> None:
    old, new = runs(twin_run)
    new["scenarios"] = []
    comparison = compare(old, new)
    assert comparison.summary() == "REGRESSED: 3 passing scenarios gone"
    assert "scenarios 6 → 0 (the new run has none)" in comparison.text()
    old["scenarios"] = []
    nothing = compare(old, new)
    assert nothing.summary() == "no regression: 0 scenarios, 0 flips, 0 slower steps"
    assert "scenarios 0 → 0 (the old run has none; the new run has none)" in nothing.text()


def test_results_without_a_list_of_scenarios_are_refused(twin_run) -> None:
    old, new = runs(twin_run)
    del new["scenarios"]
    with pytest.raises(CompareError, match="^the new results have no list of scenarios"):
        compare(old, new)
    new["scenarios"] = old["scenarios"] * 2
    with pytest.raises(CompareError, match="list .*::.* twice"):
        compare(old, new)


def test_a_pipe_in_a_scenario_name_cannot_break_the_markdown_table(twin_run) -> None:
    old, new = runs(twin_run)
    for results in (old, new):
        scenario(results, UPDATE)["id"] += "[a|b]"
    scenario(new, UPDATE).update(verdict="failed", message="x | y")
    [row] = [line for line in compare(old, new).markdown().splitlines() if line.startswith("| `")]
    assert row.startswith("| `test_update::") and row.count(" | ") == 4
    assert "[a\\|b]` | verdict | passed | failed | x \\| y |" in row
