"""onward report: what one pass over a log gathers, the page it draws, the page in a real
headless Chromium (no console error, every section, nothing loaded, a screenshot kept), and a
session of 100k events aggregated."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import msgspec
import pytest

from onward import BreakerPolicy, Engine, RetryPolicies, RetryPolicy, UsageError, Workaround
from onward.cli import main
from onward.events import (
    Append,
    ComponentFailed,
    Context,
    LogNotFound,
    SessionStarted,
    StepCompleted,
    StepFailed,
    TaskClaimed,
    TaskSubmitted,
    TaskSucceeded,
    WorkaroundApplied,
    open_log,
)
from onward.judgement.budget import ErrorBudget
from onward.projections import CatchUp
from onward.report import SECTIONS, collect_report, render_page, write_report
from onward.report.axis import Axis
from onward.report.model import BINS, RUNS_DRAWN, ApprovalRow
from onward.testing import FakeClock
from tests.chromium import Chromium
from tests.conftest import FakeClock as StillClock

ROOT = Path(__file__).parents[2]
ARTEFACTS = ROOT / "build" / "test-artefacts"


def record_session(url: str) -> None:
    """A night of work with a bit of everything: fixes, retries, a breaker that opens and
    closes, a component worked around and restored, an approval, a long idle gap."""
    clock = FakeClock()
    up = {"search": False}
    engine = Engine.open(
        url,
        session="night",
        clock=clock,
        sleep=clock.sleep,
        breakers=BreakerPolicy(failures=2, cooldown=60.0),
        retries=RetryPolicies(RetryPolicy(max_attempts=3, base=5)),
    )
    engine.component(
        "search",
        check=lambda: up["search"],
        workarounds=[Workaround(name="cached", quality_loss=0.2)],
    )
    calls = {"n": 0}

    @engine.step(hints={"defaults": {"region": "eu"}})
    def connect(config: dict[str, str]) -> str:
        clock.advance(3)
        return config["region"]

    @engine.step()
    def fetch(i: int) -> int:
        clock.advance(7)
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            raise TimeoutError("the service was slow")
        return i

    @engine.step(breaker="index")
    def index(i: int) -> int:
        clock.advance(2)
        if 10 <= i < 14:
            raise ConnectionRefusedError("the index is down")
        return i

    @engine.action(impact="high")
    def publish(name: str) -> str:
        return name

    @engine.task()
    def job(i: int) -> int:
        connect({})
        for k in range(3):
            fetch(k)
        with contextlib.suppress(ConnectionRefusedError):
            index(i)
        if i == 5:
            engine.degrade("search", message="503 from the search service")
        if i == 12:
            up["search"] = True
        if i == 15:
            publish("v1")
        return i

    def work() -> None:  # as a person would: resume a paused session, answer requests
        for _ in range(20):
            engine.run()
            asked = engine.approvals()
            for request in asked:
                clock.advance(300)
                engine.approve(request.decision_id, note="checked", by="a person")
            if not engine.resume("resumed by the test") and not asked:
                return

    with engine:
        for i in range(20):
            engine.submit(job, i)
        work()
        clock.advance(3 * 3600)  # a long idle gap: collapsed on the axis
        for i in range(20, 24):
            engine.submit(job, i)
        work()


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "night.db"
    record_session(f"sqlite:///{path}")
    return path


def big_log(path: Path, events: int = 100_000) -> None:
    """A session of ``events`` events, appended straight to the log: tasks of 20 steps that
    take a minute, a failed try now and then, two workers."""
    clock = FakeClock()
    workers = ["host/101/1/a", "host/202/1/b"]
    with open_log(f"sqlite:///{path}", clock=clock, synchronous="normal") as log:
        context = Context(session="big")
        log.append("session-big", [SessionStarted(name="big")], expected_version=0, context=context)
        written, n = 1, 0
        while written < events:
            task_id = f"t{n:06d}"
            claim = [
                TaskSubmitted(name="crunch", args=[n], kwargs={}),
                TaskClaimed(worker=workers[n % 2], lease_until=clock.now + 300, attempt=1),
            ]
            log.commit(
                [
                    Append(
                        stream=f"task-{task_id}", events=claim, expected_version=0, context=context
                    )
                ]
            )
            clock.advance(60)
            batch = []
            for index in range(20):
                if (n + index) % 37 == 0:
                    batch.append(
                        StepFailed(
                            index=index, name="crunch.part", error_type="TimeoutError", final=False
                        )
                    )
                batch.append(StepCompleted(index=index, name="crunch.part", result=index))
            batch.append(TaskSucceeded(result=n))
            log.commit(
                [
                    Append(
                        stream=f"task-{task_id}", events=batch, expected_version=2, context=context
                    )
                ]
            )
            clock.advance(20 if n % 50 else 1800)  # a quiet half hour now and then
            written += len(claim) + len(batch)
            n += 1


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "big.db"
    big_log(path)
    return path


def test_one_pass_gathers_the_session(night: Path) -> None:
    with open_log(f"sqlite:///{night}", create=False) as log:
        report = collect_report(log)
    t = report.totals
    assert report.session == "night"
    assert report.drawn == "runs"
    assert t.tasks == {"succeeded": 24}
    assert t.runs > 24
    assert t.steps > 0
    assert t.step_failures > 0
    assert t.fixes_succeeded > 0
    assert t.retries > 0
    assert t.approvals == 1
    assert [b.state for b in report.breakers["index"]][:3] == ["closed", "open", "half_open"]
    assert report.components[0].workaround == "cached"
    assert report.components[0].restored_at is not None
    assert {b.state for b in report.degradation} >= {"full", "moderate"}
    (approval,) = report.approvals
    assert (approval.answer, approval.by, approval.note) == ("granted", "a person", "checked")
    assert {c.kind for c in report.decision_counts} >= {"fix", "retry", "confidence", "budget"}
    assert any(d.kind == "confidence" and d.factors for d in report.decisions)
    assert any(
        s.error_type == "KeyError" and s.best_fix == "use-declared-default"
        for s in report.signatures
    )
    assert any(collapsed for *_, collapsed in report.axis)  # the idle gap
    assert len(report.burn) == BINS
    assert max(report.burn) > 0
    assert sum(len(lane.runs) for lane in report.lanes) == t.runs
    assert {m.kind for m in report.marks} >= {"failure", "fix", "retry", "wait", "approval"}


def test_the_page_is_self_contained(night: Path) -> None:
    with open_log(f"sqlite:///{night}", create=False) as log:
        page = render_page(collect_report(log, "night"))
    for key, _ in SECTIONS:
        assert f'<section id="{key}">' in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "default-src 'none'" in page


def test_a_long_session_is_aggregated(big: Path) -> None:
    with open_log(f"sqlite:///{big}", create=False) as log:
        report = collect_report(log)
        page = render_page(report)
    assert report.totals.events >= 100_000
    assert report.totals.runs > RUNS_DRAWN
    assert report.drawn == "bins"
    assert report.marks == []
    assert [lane.label for lane in report.lanes] == ["worker 1 (pid 101)", "worker 2 (pid 202)"]
    assert all(len(lane.busy) == BINS for lane in report.lanes)
    assert sum(report.lanes[0].marks["failure"]) > 0
    # The page's size does not grow with the log: bins, counts and the latest decisions only.
    assert len(page) < 400_000


def test_the_axis_collapses_long_gaps_only() -> None:
    axis = Axis.of(0.0, 10_000.0, [(0.0, 1000.0), (1100.0, 2000.0), (9000.0, 10_000.0)])
    assert [c for *_, c in axis.pieces] == [False, True, False]
    assert axis.x(0.0) == 0.0
    assert axis.x(10_000.0) == pytest.approx(1.0)
    assert axis.x(1050.0) < axis.x(2000.0) < axis.x(9000.0)
    assert axis.time(axis.x(1500.0)) == pytest.approx(1500.0)
    (gap,) = axis.collapsed()
    assert gap[:2] == (2000.0, 9000.0)


def test_onward_report_counts_its_events_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "one.db"
    Engine.open(f"sqlite:///{db}", session="s").close()  # the session's opening alone
    assert main(["report", "--db", str(db), "-o", str(tmp_path / "one.html")]) == 0
    assert "(1 event) written to" in capsys.readouterr().out


def test_onward_report_writes_the_page_and_prints_json(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "night.html"
    assert main(["report", "--db", str(night), "-o", str(out)]) == 0
    assert "written to" in capsys.readouterr().out
    assert out.read_text().startswith("<!doctype html>")
    assert main(["report", "--db", str(night), "--session", "night", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["session"] == "night"
    assert data["totals"]["approvals"] == 1
    written = tmp_path / "night.json"  # --json -o FILE writes the JSON there
    assert main(["report", "--db", str(night), "--json", "-o", str(written)]) == 0
    assert json.loads(written.read_text()) == data
    assert main(["report", "--db", str(night), "--json", "-o", str(night)]) == 2  # the log


def test_a_report_cut_short_leaves_the_one_before_whole(
    night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``onward report -o FILE`` wrote over the file in place: a run cut short (a full disk,
    a signal) destroyed the report before and left a truncated page. The page is written
    beside it and renamed over it once whole."""
    out = tmp_path / "night.html"
    assert main(["report", "--db", str(night), "-o", str(out)]) == 0
    before = out.read_bytes()

    def cut_short(_report: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("onward.cli.report.render_page", cut_short)
    assert main(["report", "--db", str(night), "-o", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night.html"]  # no file left behind


def test_a_missing_log_or_session_is_refused(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--db", str(tmp_path / "none.db")]) == 2
    assert main(["report", "--db", str(night), "--session", "day"]) == 2
    assert "no session 'day'" in capsys.readouterr().err
    with open_log("memory://") as log, pytest.raises(LogNotFound, match="no session"):
        collect_report(log)
    with open_log(f"sqlite:///{night}", create=False) as log, pytest.raises(UsageError):
        write_report(log, tmp_path / "x.html", session="day")


_LAST_OF_THE_SESSION = (
    "(SELECT max(rowid) FROM stored_events WHERE originator_id = 'session-night')"
)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("SET originator_id = NULL WHERE rowid = 6", "'None'"),
        ("SET originator_id = x'73657373696f6e2d6e69676874' WHERE rowid = 6", "\"b'session-night'"),
        (f"SET state = x'00ff00' WHERE rowid = {_LAST_OF_THE_SESSION}", "'session-night'"),
        (f"SET state = NULL WHERE rowid = {_LAST_OF_THE_SESSION}", "'session-night'"),
    ],
    ids=["null-stream", "blob-stream", "bad-session-record", "null-session-record"],
)
def test_a_damaged_row_is_left_out_and_named(
    night: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    named: str,
) -> None:
    db = tmp_path / "damaged.db"
    db.write_bytes(night.read_bytes())
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute(f"UPDATE stored_events {damage}")
    with open_log(f"sqlite:///{db}", create=False) as log:
        report = collect_report(log)
    assert report.session == "night"
    assert report.totals.events > 100
    assert report.damaged[0].startswith(named), report.damaged
    assert f"{len(report.damaged)} damaged stream(s)" in render_page(report)
    assert main(["report", "--db", str(db), "-o", str(tmp_path / "damaged.html")]) == 0
    assert "written to" in capsys.readouterr().out


@pytest.mark.parametrize(
    "damage",
    [
        "SET state = replace(state, 'nope', 'NOPE') WHERE {row}",  # fails its checksum
        "SET state = NULL WHERE {row}",  # does not decode
        "SET originator_version = 30 WHERE {row}",  # a gap before the record
    ],
    ids=["checksum", "undecodable", "gap"],
)
def test_a_damaged_stream_is_left_out_from_its_first_bad_record_on(
    tmp_path: Path, damage: str
) -> None:
    db = tmp_path / "failed.db"
    clock = FakeClock()
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock, sleep=clock.sleep) as engine:

        @engine.step()
        def s1() -> int:
            raise RuntimeError("nope")

        @engine.task()
        def t() -> int:
            return s1()

        task_id = engine.submit(t)
        engine.run()
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        kinds = raw.execute(
            "SELECT topic FROM stored_events WHERE originator_id = ? ORDER BY originator_version",
            (f"task-{task_id}",),
        ).fetchall()
        assert [k for (k,) in kinds][1:3] == ["TaskClaimed", "StepFailed"]
        row = f"originator_id = 'task-{task_id}' AND originator_version = 3"
        raw.execute(f"UPDATE stored_events {damage.format(row=row)}")
    with open_log(f"sqlite:///{db}", create=False) as log:
        report = collect_report(log)
    assert [d.split(":")[0] for d in report.damaged] == [f"'task-{task_id}'"]
    # its StepFailed, ErrorObserved, ErrorClassified, give_up and TaskFailed: none counted
    assert report.decision_counts == []
    assert report.totals.steps == 0
    assert [s.in_session for s in report.signatures] in ([], [0])
    (bar,) = [bar for lane in report.lanes for bar in lane.runs]
    assert (bar.task_id, bar.outcome, bar.steps) == (task_id, "damaged", 0)


def test_the_page_loads_in_a_real_browser(night: Path, big: Path, tmp_path: Path) -> None:
    facts = (
        "JSON.stringify({sections: [...document.querySelectorAll('section[id]')].map(s => s.id),"
        " title: document.title, svgs: document.querySelectorAll('svg').length,"
        " height: document.body.scrollHeight, scripts: document.scripts.length})"
    )
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser = Chromium(tmp_path / "profile")
    try:
        for name, db in (("night", night), ("big", big)):
            page_file = tmp_path / f"{name}.html"
            with open_log(f"sqlite:///{db}", create=False) as log:
                write_report(log, page_file)
            page = browser.load(page_file.as_uri(), facts)
            assert page.errors == [], page.errors
            assert page.facts["sections"] == [key for key, _ in SECTIONS]
            assert page.facts["title"] == f"onward report: session {name}"
            assert page.facts["svgs"] >= 4
            assert page.facts["scripts"] == 0
            assert page.requests == [page_file.as_uri()]  # nothing but the page itself
            assert page.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
            (ARTEFACTS / f"onward-report-{name}.png").write_bytes(page.screenshot)
    finally:
        browser.close()


def test_the_report_data_round_trips_as_json(night: Path) -> None:
    with open_log(f"sqlite:///{night}", create=False) as log:
        report = collect_report(log)
    again = msgspec.json.decode(msgspec.json.encode(report), type=type(report))
    assert again.totals == report.totals


def test_a_budget_an_earlier_onward_allowed_is_reported_as_recorded(tmp_path: Path) -> None:
    """An error budget over what this onward accepts (a limit over the errors a window keeps)
    was recorded by an earlier one: the report shows it, it does not refuse the log."""
    from onward.events import Context, DecisionMade, open_log

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Engine.open(url, session="old") as engine:
        session = f"session-{engine.session}"
    with open_log(url) as log:
        log.append(
            session,
            [
                DecisionMade(
                    kind="budget",
                    subject="old",
                    choice="within",
                    thresholds={"limit": 1500.0, "window": 7200.0},
                )
            ],
            expected_version=None,
            context=Context(session="old"),
        )
        report = collect_report(log, "old")
    assert (report.budget_limit, report.budget_window) == (1500, 7200.0)


def fail_tries(url: str, clock: object, tries: int, **options: object) -> None:
    """A session whose tasks each spend one failed try of the error budget (caught)."""
    with Engine.open(url, session="budgeted", clock=clock, **options) as engine:  # type: ignore[arg-type]

        @engine.step()
        def parse(n: int) -> int:
            raise ValueError(f"bad input {n}")

        @engine.task(name="job")
        def job(n: int) -> int:
            try:
                return parse(n)
            except ValueError:
                return -1

        for n in range(tries):
            engine.submit(job, n)
        engine.run()


def test_the_burn_is_drawn_against_the_sessions_own_budget(
    tmp_path: Path, clock: StillClock
) -> None:
    """The session's budget is recorded when it opens: a limit of 100 spent 30 times burns
    30%, though no budget decision was recorded; reopened with another budget, the burn is
    drawn against that one from then on."""
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    opened = clock.now
    fail_tries(url, clock, 30, budget=ErrorBudget(limit=100, window=1800.0))
    with open_log(url, create=False) as log:
        report = collect_report(log)
        page = render_page(report)
    assert report.totals.step_failures == 30
    assert report.totals.decisions.get("budget", 0) == 0
    assert (report.budget_limit, report.budget_window, report.budget_recorded) == (
        100,
        1800.0,
        True,
    )
    assert max(report.burn) == pytest.approx(0.3)
    assert "limit of 100 (peak 30%)" in page

    clock.advance(7200)  # the first 30 are out of any window by now
    reopened = clock.now
    fail_tries(url, clock, 6, budget=ErrorBudget(limit=20, window=3600.0))
    with open_log(url, create=False) as log:
        report = collect_report(log)
    assert report.budget_settings == [(opened, 100, 1800.0), (reopened, 20, 3600.0)]
    assert (report.budget_limit, report.budget_window) == (20, 3600.0)
    assert report.burn[-1] == pytest.approx(6 / 20)
    assert max(report.burn) == pytest.approx(6 / 20)


def test_the_burn_counts_afresh_from_a_resumption_after_a_pause(
    tmp_path: Path, clock: StillClock
) -> None:
    """A person who resumes a paused session gives it a fresh budget window (``onward resume``):
    the page went on counting the failed tries from before the pause, so right after the
    resumption it drew the budget still spent, and later over twice its limit where the budget
    (and ``onward sessions``) counted the failures since the resumption alone."""
    url = f"sqlite:///{tmp_path / 'paused.db'}"
    budget = ErrorBudget(limit=4, window=3600.0)
    with Engine.open(
        url, session="budgeted", clock=clock, sleep=clock.advance, budget=budget
    ) as engine:

        @engine.step()
        def call(n: int) -> int:
            raise ConnectionResetError(104, "Connection reset by peer")

        @engine.task(name="job")
        def job(n: int) -> int:
            return call(n)

        for n in range(4):
            engine.submit(job, n)
        assert engine.run().paused
        clock.advance(60)
        engine.resume("looked at it")
        engine.submit(job, 4)
        engine.run()
    with open_log(url, create=False) as log:
        report = collect_report(log)
        projections = CatchUp(log, checkpoint_every=0).open()
    counted = projections.budget.window("budgeted", report.end, 3600.0).errors
    assert 0 < counted < report.totals.step_failures
    assert report.burn[-1] == pytest.approx(counted / 4)


def test_a_log_that_does_not_record_the_budget_says_the_limit_is_assumed(
    tmp_path: Path, clock: StillClock
) -> None:
    """An earlier onward recorded neither the budget nor (within limits) a decision: the report
    still draws the burn, against the default's limit, and says it assumed it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with open_log(url, clock=clock) as log:
        context = Context(session="old")
        log.append("session-old", [SessionStarted(name="old")], expected_version=0, context=context)
        clock.advance(60)
        log.append(
            "task-t1",
            [
                TaskSubmitted(name="job", args=[], kwargs={}),
                TaskClaimed(worker="host/1/1/a", lease_until=clock.now + 300, attempt=1),
                StepFailed(index=0, name="parse", error_type="ValueError", final=True),
            ],
            expected_version=0,
            context=context,
        )
        report = collect_report(log)
        page = render_page(report)
    assert (report.budget_limit, report.budget_recorded, report.budget_settings) == (10, False, [])
    assert max(report.burn) == pytest.approx(0.1)
    assert "limit (10?)" in page
    assert "assumed: this log does not record the session&#x27;s budget" in page


def test_a_request_whose_task_ended_unanswered_is_shown_lapsed(
    tmp_path: Path, clock: StillClock
) -> None:
    """As engine.approvals() has it: cancelled unanswered, the request lapsed (not "waiting");
    the task retried, it waits again."""
    url = f"sqlite:///{tmp_path / 'lapsed.db'}"

    def rows() -> list[ApprovalRow]:
        with open_log(url, create=False) as log:
            return collect_report(log).approvals

    with Engine.open(url, session="lapsed", clock=clock) as engine:

        @engine.action(impact="high", check=lambda result: True)
        def publish(name: str) -> str:
            return name

        @engine.task(name="release")
        def release(name: str) -> str:
            return publish(name)

        task_id = engine.submit(release, "v1")
        engine.run()
        (waiting,) = rows()
        assert (waiting.answer, waiting.lapsed, waiting.lapsed_at) == ("", "", None)

        clock.advance(90)
        engine.cancel(task_id, reason="not today")
        assert engine.approvals() == []
        (lapsed,) = rows()
        assert (lapsed.answer, lapsed.lapsed, lapsed.lapsed_at) == ("", "cancelled", clock.now)
        with open_log(url, create=False) as log:
            page = render_page(collect_report(log))
        assert "<td>lapsed (task cancelled)</td>" in page
        assert "<td>waiting</td>" not in page

        engine.retry(task_id)
        engine.run()
        (again,) = rows()
        assert [a.decision_id for a in engine.approvals()] == [again.decision_id]
        assert (again.answer, again.lapsed) == ("", "")


def test_a_session_that_starts_at_time_zero_starts_there(tmp_path: Path, clock: StillClock) -> None:
    """Time 0 is a time like any other (a fake clock may start there), not "not yet set"."""
    clock.now = 0.0
    url = f"sqlite:///{tmp_path / 'zero.db'}"
    with Engine.open(url, session="zero", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="nap")
        def nap() -> int:
            engine.sleep(7200)
            return 1

        engine.submit(nap)
        engine.run()
        engine.run()
    with open_log(url, create=False) as log:
        report = collect_report(log)
        page = render_page(report)
    assert (report.start, report.end) == (0.0, 7200.0)
    assert report.lanes[0].runs[0].start == 0.0
    assert "<b>2h00m</b><span>session span</span>" in page


def test_the_degradation_track_ends_where_onward_sessions_says(
    tmp_path: Path, clock: StillClock
) -> None:
    """A component left with no workaround makes the session severe (`onward sessions`); the
    report's track stayed at its last workaround's level."""
    url = f"sqlite:///{tmp_path / 'severe.db'}"
    with Engine.open(url, session="severe", clock=clock) as engine:
        engine.component(
            "search",
            check=lambda: False,
            workarounds=[Workaround(name="cached", quality_loss=0.2)],
        )

        @engine.task(name="look")
        def look(n: int) -> None:
            clock.advance(60)
            engine.degrade("search", message="503")

        engine.submit(look, 1)
        engine.submit(look, 2)
        engine.run()
        clock.advance(60)
        level = engine.degradation().level
    assert level == "severe"
    with open_log(url, create=False) as log:
        track = collect_report(log).degradation
    assert [band.state for band in track] == ["full", "moderate", "severe"]
    assert track[-1].note == "search: no workaround left"


def test_a_workaround_decided_on_an_earlier_state_is_not_on_the_track(
    tmp_path: Path, clock: StillClock
) -> None:
    """Two tasks report the same outage: the second's first rung arrives after the first's
    second rung, and the sessions' projection passes it by; the report drew it and showed it
    as the component's workaround."""
    url = f"sqlite:///{tmp_path / 'rungs.db'}"
    context = Context(session="rungs")
    with open_log(url, clock=clock) as log:
        log.append(
            "session-rungs", [SessionStarted(name="rungs")], expected_version=0, context=context
        )
        for event in (
            ComponentFailed(component="search", message="503"),
            WorkaroundApplied(
                component="search", workaround="cached", quality_loss=0.2, level="moderate", rung=1
            ),
            WorkaroundApplied(
                component="search",
                workaround="keywords",
                quality_loss=0.3,
                level="moderate",
                rung=2,
            ),
            WorkaroundApplied(
                component="search", workaround="cached", quality_loss=0.2, level="moderate", rung=1
            ),
        ):
            clock.advance(60)
            log.append("session-rungs", [event], expected_version=None, context=context)
        clock.advance(60)
        report = collect_report(log)
    assert [band.note for band in report.degradation] == [
        "",
        "search -> cached",
        "search -> keywords",
    ]
    (component,) = report.components
    assert component.workaround == "keywords"


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"


def test_the_page_escapes_bidirectional_controls_as_the_terminal_does(
    tmp_path: Path, clock: StillClock
) -> None:
    """Text from the log that holds bidirectional overrides, isolates or direction marks
    (a "Trojan Source" spoof) is shown escaped (``\\u202e``), never reordered."""
    url = f"sqlite:///{tmp_path / 'bidi.db'}"
    with Engine.open(url, session="bidi", clock=clock) as engine:

        @engine.step()
        def fetch(what: str) -> str:
            raise ValueError(f"no such file: {what}")

        @engine.task(name="job\u202egnp.exe")
        def job(what: str) -> str:
            return fetch(what)

        engine.submit(job, "report\u202efdp.txt" + BIDI)
        engine.run()
    with open_log(url, create=False) as log:
        page = render_page(collect_report(log))
    assert not set(BIDI) & set(page)
    assert "job\\u202egnp.exe" in page
    assert "report\\u202efdp.txt\\u202a" in page


def test_the_page_keeps_the_format_characters_that_are_part_of_the_text(
    tmp_path: Path, clock: StillClock
) -> None:
    """Joiners (an emoji family, a Persian word), a soft hyphen, a subdivision flag's tags, a
    tab and right-to-left or CJK letters reach the page as they are: only the bidirectional
    controls are escaped."""
    names = [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 build",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u4e2d\u6587",
        "co\u00adop",
        "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f wales",
    ]
    url = f"sqlite:///{tmp_path / 'text.db'}"
    with Engine.open(url, session="text", clock=clock) as engine:
        for name in names:

            @engine.task(name=name)
            def job(what: str) -> str:
                return what

            engine.submit(job, name)
        engine.run()
    with open_log(url, create=False) as log:
        page = render_page(collect_report(log))
    for name in names:
        assert name in page


def copy_log(source: Path, path: Path) -> None:
    """A copy of a SQLite log, whatever its write-ahead log still holds."""
    with (
        contextlib.closing(sqlite3.connect(source)) as read,
        contextlib.closing(sqlite3.connect(path)) as written,
    ):
        read.backup(written)


def damage_the_stream_index(path: Path) -> None:
    """Overwrite every page of SQLite's index of (stream, version) (the records' table is
    left whole): reads by stream fail, reads in log order do not."""
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = [
        int(r[0])
        for r in raw.execute(
            "SELECT pageno FROM dbstat WHERE name='sqlite_autoindex_stored_events_1'"
        )
    ]
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    raw.close()
    data = bytearray(path.read_bytes())
    for page in pages:
        data[(page - 1) * page_size : page * page_size] = b"\xff" * page_size
    path.write_bytes(bytes(data))


def damage_a_records_page(path: Path) -> None:
    """Overwrite a page of the records' own table, in the middle of the log."""
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    leaves = [
        int(r[0])
        for r in raw.execute(
            "SELECT pageno FROM dbstat WHERE name='stored_events' AND pagetype='leaf'"
        )
    ]
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    raw.close()
    data = bytearray(path.read_bytes())
    page = leaves[len(leaves) // 2]
    data[(page - 1) * page_size : page * page_size] = b"\xff" * page_size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("output", ["page", "json"])
def test_a_damaged_index_page_is_told_in_one_line_with_what_to_do(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    """SQLite's index of the log's streams is damaged, its records are whole: the report says
    so in one line, and points to ``onward verify`` and to REINDEX, which rebuilds the index
    from the records."""
    path = tmp_path / "damaged.db"
    copy_log(night, path)
    damage_the_stream_index(path)
    args = ["report", "--db", str(path)]
    args += ["--json"] if output == "json" else ["-o", str(tmp_path / "report.html")]
    assert main(args) == 2
    said = capsys.readouterr()
    assert said.out == ""
    (line,) = said.err.splitlines()
    assert "damaged" in line
    assert "index" in line
    assert f"onward verify --db {path}" in line
    assert "REINDEX" in line
    assert not (tmp_path / "report.html").exists()
    if shutil.which("sqlite3") is None:
        return
    # The advice for pages that no longer read: the records, dumped into a new file.
    rebuilt = tmp_path / "rebuilt.db"
    dump = subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, check=True)
    subprocess.run(["sqlite3", str(rebuilt)], input=dump.stdout, check=True)
    rebuilt.chmod(0o600)
    assert main(["verify", "--db", str(rebuilt)]) == 0
    assert main(["report", "--db", str(rebuilt), "--json"]) == 0


def test_a_damaged_records_page_is_told_in_one_line_without_reindex(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The records' own pages are damaged too: REINDEX cannot help; the line points to
    ``onward verify`` and to the log's backup."""
    path = tmp_path / "damaged.db"
    copy_log(night, path)
    damage_the_stream_index(path)
    damage_a_records_page(path)
    assert main(["report", "--db", str(path), "--json"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "damaged" in line
    assert f"onward verify --db {path}" in line
    assert "REINDEX" not in line
    assert "backup" in line


def test_a_report_chosen_among_several_sessions_says_which_and_how_to_pick_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--session`` the report is of the session updated last; among several, it
    said nothing of the choice. It says which one it chose, why, the others, and how to pick
    another; where the data goes to the standard output, on the standard error."""
    path = tmp_path / "two.db"
    clock = FakeClock()
    for name in ("alpha", "beta"):
        with Engine.open(f"sqlite:///{path}", session=name, clock=clock, sleep=clock.sleep):
            clock.advance(60)
    page = tmp_path / "report.html"
    assert main(["report", "--db", str(path), "-o", str(page)]) == 0
    said = capsys.readouterr()
    assert "report of session 'beta'" in said.out
    (chosen,) = [line for line in said.out.splitlines() if "--session" in line]
    assert "'beta'" in chosen
    assert "updated last" in chosen
    assert "alpha" in chosen
    assert "onward sessions" in chosen
    assert main(["report", "--db", str(path), "--json"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["session"] == "beta"
    assert chosen in said.err.splitlines()
    assert main(["report", "--db", str(path), "--session", "alpha", "-o", str(page)]) == 0
    said = capsys.readouterr()
    assert "report of session 'alpha'" in said.out
    assert "--session" not in said.out + said.err
