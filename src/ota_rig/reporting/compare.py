"""What got worse between two runs: `rig compare OLD NEW`, for a release engineer and for CI.

Two results.json documents (ota_rig.records) are matched scenario by scenario on the pytest node
id, and three kinds of difference come out:

Verdicts. A scenario is *failing* when its verdict is "failed" or "error".
  - A regression is the new run failing where the old one did not (passed, skipped, or
    absent: a new scenario that fails is as much news as an old one that broke), or a
    scenario that passed in the old run and is absent from the new one. A vanished scenario
    is never harmless by default: RunRecorder records tests that ran, so a test module that
    no longer imports drops out of results.json without a trace, and whatever it proved is
    no longer proved. A scenario "interrupted" in the new run (a signal stopped the run while
    it ran) counts as absent: it proved nothing either.
  - A fix is a failing scenario that now passes.
  - Anything else is a note: failed <-> error (still failing), a failing scenario that
    vanished (its failure is hidden, not fixed: listed first among the notes, never a fix),
    a new passing scenario, and any move to or from "skipped". A skip is not a regression:
    pytest records it with the reason the test gave (a hardware-only scenario on the twin),
    so it is a decision the run states, not a silence; the note carries that reason.

Durations. Each phase of `durations` (build, flash, boot, tls_handshake, reboot, total, and
the download) is compared only for scenarios that passed in both runs: a failed scenario's
phases end wherever it failed and mean nothing. A phase is a regression when both
    new >= old * threshold   and   new - old >= min_seconds
hold: the factor says "slower", the floor keeps millisecond phases on the twin (a 13 ms
handshake taking 26 ms) from counting. A phase either run did not measure (None) is skipped.
The download compares its seconds when both runs sent the same number of bytes; when the
size changed, seconds are not comparable and its rate (bytes_per_second) is compared
instead, as the time the new download would take at each rate, so the same rule and the same
floor apply. A phase that got faster by the same rule is a note.

Context. Changes in what the runs ran with are notes, because they explain the rest: the
rig's version and commit, esptool, Python, the board's kind, chip and MAC, the signal that
stopped a run, the number of scenarios, and each device profile's core (with its IDF and Mbed TLS). When a scenario's
verdict flips and its profile's core changed, the flip says so: a core upgrade flipping a
verdict is the story.

    comparison = compare(old, new, threshold=2.0, min_seconds=1.0)
    comparison.regressed      # True when anything above counts as a regression
    comparison.text()         # for a terminal; the first line is the verdict in one sentence
    comparison.markdown()     # for a pull-request comment
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ota_rig.errors import RigError

FAILING = ("failed", "error")
UNPROVEN = (None, "interrupted")  # absent from the run, or cut short: no verdict
# Defaults that keep the twin's noise out: between three runs of the same code (46 scenarios,
# 4 at a time on 2 cores) a scenario's total varied by up to 1.71x and 1.4 s; its phases less.
# A quiet bench (a board runs one scenario at a time) can afford --threshold 1.5.
THRESHOLD = 2.0
MIN_SECONDS = 1.0
PHASES = ("build", "flash", "boot", "tls_handshake", "reboot", "total")  # seconds, in durations
CONTEXT = (("rig version", "rig", "version"), ("rig commit", "rig", "commit"), ("esptool", "rig", "esptool"),
           ("python", "rig", "python"), ("board", "board", "kind"), ("chip", "board", "chip"),
           ("board MAC", "board", "mac"), ("stopped by", "run", "interrupted"))
RATE_UNITS = ((1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s"), (1, "B/s"))
ABSENT = "absent"
# What a scenario that left the run no longer shows, by its old verdict.
GONE = {"passed": "nothing shows it still passes", "failed": "its failure is hidden, not fixed",
        "error": "its failure is hidden, not fixed"}


class CompareError(RigError, ValueError):
    """Results or settings `compare` cannot work with; the message says which and why."""


# --- what a comparison finds ----------------------------------------------------------------

@dataclass(frozen=True)
class VerdictChange:
    """A scenario whose verdict differs between the runs; None: the run does not have it."""

    scenario: str  # module::name
    old: str | None
    new: str | None
    message: str | None = None  # the one line that says why, from the run that has one
    core: str | None = None  # "arduino-esp32-2.0 core 2.0.14 → 2.0.17" when its profile's core changed
    what = "verdict"

    @property
    def kind(self) -> str:
        """"regression", "fix" or "note", by the rules of the module's docstring."""
        if (self.new in FAILING and self.old not in FAILING) or (self.new in UNPROVEN and self.old == "passed"):
            return "regression"
        return "fix" if self.old in FAILING and self.new == "passed" else "note"

    @property
    def before(self) -> str:
        return self.old or ABSENT

    @property
    def after(self) -> str:
        return self.new or ABSENT

    @property
    def why(self) -> str:
        if self.new is None:
            reasons = [f"no longer in the run: {GONE.get(self.old or ABSENT, 'it was skipped')}"]
        else:
            reasons = (["new scenario"] if self.old is None else []) + ([self.message] if self.message else [])
        return "; ".join(reasons + ([f"profile {self.core}"] if self.core else []))


@dataclass(frozen=True)
class TimingChange:
    """One phase of a scenario that passed in both runs, slower or faster beyond the threshold."""

    scenario: str
    phase: str  # a key of durations, "download" (its seconds) or "download rate" (bytes per second)
    old: float
    new: float
    size: int | None = None  # for "download rate": the bytes of the new run's download

    @property
    def seconds(self) -> tuple[float, float]:
        """Old and new as seconds; for a rate, how long the new download takes at each."""
        if self.size is None:
            return self.old, self.new
        return self.size / self.old, self.size / self.new

    @property
    def ratio(self) -> float:
        """How many times longer the phase took (below 1: faster)."""
        old, new = self.seconds
        return new / old if old else math.inf

    @property
    def what(self) -> str:
        return self.phase

    @property
    def before(self) -> str:
        return self._show(self.old)

    @property
    def after(self) -> str:
        return self._show(self.new)

    @property
    def why(self) -> str:
        if not math.isfinite(self.ratio):
            return "slower, from nothing"
        return f"{self.ratio:.1f}x slower" if self.ratio > 1 else f"{1 / self.ratio:.1f}x faster"

    def _show(self, value: float) -> str:
        if self.size is not None:
            scale, unit = next((scale, unit) for scale, unit in RATE_UNITS if value >= scale or scale == 1)
            return f"{value / scale:.4g} {unit}"
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.4g} ms"


@dataclass(frozen=True)
class ContextChange:
    """A fact of the run itself (tools, board, profiles, number of scenarios) that differs."""

    what: str
    old: str | None
    new: str | None
    why: str = ""
    scenario = None  # about the whole run

    @property
    def before(self) -> str:
        return ABSENT if self.old is None else self.old

    @property
    def after(self) -> str:
        return ABSENT if self.new is None else self.new


# A finding of any kind: each says its scenario (None: the whole run), what changed, before,
# after and why, the words text() and markdown() print.
Change = VerdictChange | TimingChange | ContextChange


@dataclass
class Comparison:
    """The differences between two runs, sorted into what got worse, what got fixed and what
    is worth knowing; `regressed` decides the exit status of `rig compare`."""

    threshold: float
    scenarios: int  # in the new run
    runs: tuple[str, str]  # one line about each run, old then new
    regressions: list[Change] = field(default_factory=list)
    fixes: list[VerdictChange] = field(default_factory=list)
    notes: list[Change] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def summary(self) -> str:
        """The comparison in one sentence."""
        if self.regressed:
            return "REGRESSED: " + ", ".join(self._counts())
        flips = sum(isinstance(item, VerdictChange) for item in self.fixes + self.notes)
        fixed = f", {len(self.fixes)} fixed" if self.fixes else ""
        return (f"no regression: {_count(self.scenarios, 'scenario')}, {_count(flips, 'flip')}, "
                f"0 slower steps{fixed}")

    def _counts(self) -> list[str]:
        """What the regressions are, counted by kind, leaving out the kinds there are none of."""
        flips = [item for item in self.regressions if isinstance(item, VerdictChange)]
        flipped = [item.new for item in flips if item.old is not None and item.new is not None]
        counts = [
            (len(flipped), f"flipped to {' or '.join(sorted(set(flipped)))}", "scenario"),
            (sum(item.old is None for item in flips), "failing", "new scenario"),
            (sum(item.new is None for item in flips), "gone", "passing scenario"),
            (len(self.regressions) - len(flips), f"slower than {self.threshold:g}x", "step"),
        ]
        return [f"{_count(number, noun)} {text}" for number, text, noun in counts if number]

    def text(self) -> str:
        """For a terminal: the verdict, the two runs, then one line per finding."""
        lines = [self.summary(), f"old run: {self.runs[0]}", f"new run: {self.runs[1]}"]
        for title, items in (("Regressions", self.regressions), ("Fixed", self.fixes), ("Notes", self.notes)):
            if items:
                lines += ["", f"{title}:"] + [f"  {_line(item, str)}" for item in items]
        return "\n".join(lines)

    def markdown(self) -> str:
        """For a pull-request comment: a heading, the verdict, a table of regressions, then the
        fixes and notes as lists."""
        lines = ["## OTA rig: comparison of two runs", "", f"**{self.summary()}**", "",
                 f"Old run: {_escape(self.runs[0])}  ", f"New run: {_escape(self.runs[1])}"]
        if self.regressions:
            lines += ["", "### Regressions", "", "| Scenario | What | Old | New | Ratio or reason |",
                      "|---|---|---|---|---|"]
            lines += [f"| {' | '.join(_cells(item))} |" for item in self.regressions]
        for title, items in (("Fixed", self.fixes), ("Notes", self.notes)):
            if items:
                lines += ["", f"### {title}", ""] + [f"- {_line(item, _code)}" for item in items]
        return "\n".join(lines) + "\n"


def _line(item: Change, name: Callable[[str], str]) -> str:
    """One finding as a line; `name` formats the scenario's name."""
    where = f"{name(item.scenario)}: " if item.scenario else ""
    why = f" ({item.why})" if item.why else ""
    return f"{where}{item.what} {item.before} → {item.after}{why}"


def _cells(item: Change) -> list[str]:
    scenario = _code(item.scenario) if item.scenario else ""
    return [scenario, *(_escape(text) for text in (item.what, item.before, item.after, item.why))]


def _code(name: str) -> str:
    return f"`{_escape(name)}`"


def _escape(text: str) -> str:
    """Text that cannot break a markdown table row: | escaped (GitHub honours \\| even inside a
    code span in a table), lines joined."""
    return " ".join(text.splitlines()).replace("|", "\\|")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# --- comparing ------------------------------------------------------------------------------

def compare(old: dict[str, Any], new: dict[str, Any], *, threshold: float = THRESHOLD,
            min_seconds: float = MIN_SECONDS) -> Comparison:
    """The differences between the `old` and `new` results (each as ota_rig.records.load reads it);
    the module's docstring says what counts as a regression."""
    if not 1 <= threshold < math.inf:
        raise CompareError(f"threshold {threshold:g} is not a factor of 1 or more (below 1 a faster step would "
                           "count as slower); pass the factor a step must grow by, such as 1.5")
    if not 0 <= min_seconds < math.inf:
        raise CompareError(f"min_seconds {min_seconds:g} is not a number of seconds; pass 0 or more")
    before, after = _scenarios(old, "old"), _scenarios(new, "new")
    cores = _core_changes(old, new)
    flips: list[VerdictChange] = []
    slower: list[TimingChange] = []
    faster: list[TimingChange] = []
    for key in [*after, *(key for key in before if key not in after)]:
        change = _verdict_change(before.get(key), after.get(key), cores)
        if change is not None:
            flips.append(change)
        elif after[key].get("verdict") == "passed":
            for timing in _measured(after[key], before[key]):
                then, now = timing.seconds
                if _grew(then, now, threshold, min_seconds):
                    slower.append(timing)
                elif _grew(now, then, threshold, min_seconds):
                    faster.append(timing)
    noted = sorted((flip for flip in flips if flip.kind == "note"), key=lambda flip: flip.new is not None)
    return Comparison(
        threshold=threshold, scenarios=len(after), runs=(_describe(old), _describe(new)),
        regressions=[*(flip for flip in flips if flip.kind == "regression"), *slower],
        fixes=[flip for flip in flips if flip.kind == "fix"],
        notes=[*noted, *_context(old, new), *faster],  # vanished scenarios first: a hidden failure
    )


def _scenarios(results: dict[str, Any], which: str) -> dict[str, dict[str, Any]]:
    """A run's scenarios by node id, checked enough to compare."""
    scenarios = results.get("scenarios")
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) and isinstance(s.get("id"), str)
                                                  for s in scenarios):
        raise CompareError(f"the {which} results have no list of scenarios with ids; "
                           "pass a results.json a run wrote")
    twice = [node for node, seen in Counter(s["id"] for s in scenarios).items() if seen > 1]
    if twice:
        raise CompareError(f"the {which} results list {twice[0]} twice; pass a results.json a single run wrote")
    return {scenario["id"]: scenario for scenario in scenarios}


def _verdict_change(old: dict | None, new: dict | None, cores: dict[str, str]) -> VerdictChange | None:
    """How a scenario's verdict changed between the runs, or None when it did not."""
    was, now = (None if s is None else s.get("verdict") for s in (old, new))
    if old is not None and new is not None and was == now:
        return None
    scenario = new if new is not None else old
    if scenario is None:  # in neither run: nothing changed
        return None
    message = (new or {}).get("message") or (old or {}).get("message")
    profile = scenario.get("profile")
    return VerdictChange(_name(scenario["id"]), was, now, message, None if profile is None else cores.get(profile))


def _grew(then: float, now: float, threshold: float, min_seconds: float) -> bool:
    # durations carry 4 decimals: the difference is rounded alike, so 1.2 - 0.7 counts as 0.5
    return now >= then * threshold and round(now - then, 4) >= min_seconds


def _measured(new: dict, old: dict) -> list[TimingChange]:
    """Every phase both runs measured for a scenario, as a TimingChange to judge."""
    scenario, then, now = _name(new["id"]), old.get("durations") or {}, new.get("durations") or {}
    changes = [TimingChange(scenario, phase, then[phase], now[phase]) for phase in PHASES
               if then.get(phase) is not None and now.get(phase) is not None]
    was, got = then.get("download") or {}, now.get("download") or {}
    if was.get("bytes") == got.get("bytes") and None not in (was.get("seconds"), got.get("seconds")):
        changes.append(TimingChange(scenario, "download", was["seconds"], got["seconds"]))
    elif was.get("bytes_per_second") and got.get("bytes_per_second"):
        changes.append(TimingChange(scenario, "download rate", was["bytes_per_second"], got["bytes_per_second"],
                                    size=got["bytes"]))
    return changes


def _context(old: dict, new: dict) -> list[ContextChange]:
    """The facts about the runs that differ (tools, board, profiles, number of scenarios), and
    a run without scenarios, said even when both are."""
    changes = [ContextChange(what, _fact(old, *keys), _fact(new, *keys)) for what, *keys in CONTEXT]
    profiles = _profiles(old), _profiles(new)
    changes += [ContextChange(f"profile {name}", profiles[0].get(name), profiles[1].get(name))
                for name in sorted(profiles[0].keys() | profiles[1].keys())]
    counts = len(old["scenarios"]), len(new["scenarios"])
    empty = [f"the {which} run has none" for which, count in zip(("old", "new"), counts, strict=True) if not count]
    changes.append(ContextChange("scenarios", str(counts[0]), str(counts[1]), "; ".join(empty)))
    return [change for change in changes if change.old != change.new or change.why]


def _fact(results: dict, section: str, key: str) -> str | None:
    value = (results.get(section) or {}).get(key)
    return None if value is None else str(value)


def _profiles(results: dict) -> dict[str, str]:
    """Each device profile the run used, described by its core, IDF and Mbed TLS."""
    return {p["name"]: f"core {p.get('core')}, IDF {p.get('idf')}, Mbed TLS {p.get('mbedtls')}"
            for p in results.get("profiles") or ()}


def _core_changes(old: dict, new: dict) -> dict[str, str]:
    """Profile name -> "name core A → B", for each profile whose core differs between the runs."""
    cores = [{p["name"]: p.get("core") for p in results.get("profiles") or ()} for results in (old, new)]
    return {name: f"{name} core {cores[0][name]} → {cores[1][name]}"
            for name in cores[0].keys() & cores[1].keys() if cores[0][name] != cores[1][name]}


def _describe(results: dict) -> str:
    """One line about a run: when, on what, how it went."""
    run, scenarios = results.get("run") or {}, results["scenarios"]
    started = str(run.get("started") or "at an unknown time")[:19].replace("T", " ")
    passed = sum(scenario.get("verdict") == "passed" for scenario in scenarios)
    board = (results.get("board") or {}).get("kind") or run.get("board")
    return f"{started} on {board}, {passed} of {len(scenarios)} passed"


def _name(node_id: str) -> str:
    """A scenario's compact name: its module without folders or .py, then the rest of its id."""
    module, _, rest = node_id.partition("::")
    return f"{Path(module).stem}::{rest}" if rest else node_id
