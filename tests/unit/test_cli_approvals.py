"""`onward approvals`, `approve` and `deny` against a real log, answered while an engine waits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onward import Engine
from onward.cli.main import main
from tests.conftest import FakeClock


def waiting_engine(path: Path, clock: FakeClock) -> tuple[Engine, str]:
    engine = Engine.open(f"sqlite:///{path}", session="cli", clock=clock, sleep=clock.advance)

    @engine.action(impact="high")
    def deploy(target: str) -> str:
        return f"deployed {target}"

    @engine.task()
    def release(target: str) -> str:
        return deploy(target)

    task_id = engine.submit(release, "staging")
    engine.run()
    return engine, task_id


def test_list_then_approve_from_the_command_line(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "work.db"
    engine, task_id = waiting_engine(path, clock)
    assert main(["approvals", "--db", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["log"].endswith("work.db")
    assert listed["position"] > 0
    (request,) = listed["approvals"]
    assert request["task_id"] == task_id
    assert request["action"] == "deploy"
    assert main(["approvals", "--db", str(path)]) == 0
    assert "deploy" in capsys.readouterr().out

    assert main(["approve", request["decision_id"][:8], "--db", str(path), "--note", "ok"]) == 0
    assert "approved: action 'deploy'" in capsys.readouterr().out
    assert main(["approve", request["decision_id"], "--db", str(path)]) == 2
    assert "already approved" in capsys.readouterr().err

    engine.run()
    assert engine.result(task_id) == "deployed staging"
    assert main(["approvals", "--db", str(path)]) == 0
    assert "no approval waits" in capsys.readouterr().out
    engine.close()


def test_deny_and_bad_ids(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "work.db"
    engine, task_id = waiting_engine(path, clock)
    assert main(["deny", "nope", "--db", str(path)]) == 2
    assert "no approval request 'nope'" in capsys.readouterr().err
    (request,) = engine.approvals()
    assert main(["deny", request.decision_id, "--db", str(path), "--json", "--by", "ops"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "denied"
    engine.run()
    assert engine.task_view(task_id).state == "failed"
    assert "ActionDenied" in engine.task_view(task_id).error
    assert main(["approvals", "--db", str(tmp_path / "missing.db")]) == 2
    engine.close()


@pytest.mark.usefixtures("both_paths")
@pytest.mark.parametrize("answered", ["while queued", "while it runs"])
def test_a_request_asked_again_by_a_retry_is_answered_while_the_task_is_queued_or_runs(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], answered: str
) -> None:
    """After a cancel and a retry, `onward approvals` listed the request again, but `approve`
    refused it while the task was queued; approved while the task ran (before its action),
    the worker's next append clashed with the answer: the action raised VersionConflict into
    the task's code, which took its "denied" branch, and the worker stopped."""
    path = tmp_path / "work.db"
    published: list[str] = []
    branch: list[str] = []
    with Engine.open(
        f"sqlite:///{path}", session="cli", clock=clock, sleep=clock.advance
    ) as engine:

        @engine.action(impact="high")
        def publish(target: str) -> str:
            published.append(target)
            return f"published {target}"

        def approve_now() -> None:
            assert main(["approvals", "--db", str(path), "--json"]) == 0
            (request,) = json.loads(capsys.readouterr().out)["approvals"]
            assert main(["approve", request["decision_id"], "--db", str(path)]) == 0

        @engine.step()
        def prepare(target: str) -> str:
            return target

        @engine.task()
        def release(target: str) -> str:
            prepare(target)
            if answered == "while it runs" and engine.task_view(task_id).attempt == 2:
                approve_now()  # a person, from another process, as the task runs
            try:
                done = publish(target)
            except Exception as exc:
                branch.append(type(exc).__name__)
                return "denied"
            branch.append("approved")
            return done

        task_id = engine.submit(release, "prod")
        engine.run()
        assert engine.task_view(task_id).state == "waiting"
        engine.cancel(task_id, reason="not now")
        engine.retry(task_id)
        if answered == "while queued":
            approve_now()
        engine.run()
        assert engine.result(task_id) == "published prod"
        assert published == ["prod"]
        assert branch == ["approved"]


def test_an_answer_that_comes_while_an_async_task_holds_its_wait_is_acted_on(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An async task asks for approval while a sibling step still runs: its wait is held
    until the sibling's failure is recorded. A person answered in between; the run took the
    answer in, then recorded the wait it had held, for an answer already given: the task
    waited for good, and no request was left to answer.

    The sibling's body runs until the approval's wait is pending, and only then fails: the
    order does not hang on how long either takes."""
    import asyncio

    from onward import Rulebook
    from onward.runtime.run import CURRENT_RUN

    path = tmp_path / "work.db"
    rulebook = Rulebook()
    answered: list[str] = []

    @rulebook.function("a-person-answers-meanwhile", "error", priority=9)
    def answer_meanwhile(scenario: str, facts: object) -> None:
        if not answered:
            capsys.readouterr()
            assert main(["approvals", "--db", str(path), "--json"]) == 0
            for request in json.loads(capsys.readouterr().out)["approvals"]:
                assert main(["approve", request["decision_id"], "--db", str(path)]) == 0
                answered.append(request["decision_id"])

    with Engine.open(
        f"sqlite:///{path}", session="cli", clock=clock, sleep=clock.advance, rulebook=rulebook
    ) as engine:

        @engine.action(impact="high")
        async def publish(target: str) -> str:
            return f"published {target}"

        tidying = asyncio.Event()

        @engine.action(impact="low", undo=lambda *args: None, check=lambda result: True)
        async def tidy(target: str) -> str:
            tidying.set()
            run = CURRENT_RUN.get()
            assert run is not None
            await run.in_flight.until_a_wait_pends()  # publish asked, its wait to follow
            raise ValueError("tidy broke")

        @engine.task()
        async def release(target: str) -> list[str]:
            async def then_publish() -> str:
                await tidying.wait()  # tidy's body is under way
                return await publish(target)

            done = await asyncio.gather(tidy(target), then_publish(), return_exceptions=True)
            return [repr(x) if isinstance(x, BaseException) else x for x in done]

        task_id = engine.submit(release, "prod")
        asyncio.run(engine.run_async())
        assert len(answered) == 1
        assert engine.result(task_id)[1] == "published prod"
        recorded = [type(r.event).__name__ for r in engine.log.read_stream(f"task-{task_id}")]
        # The wait was held past the sibling's failure, and the answer came in between.
        asked, granted = recorded.index("ApprovalRequested"), recorded.index("ApprovalGranted")
        assert asked < granted < recorded.index("StepFailed") < recorded.index("TaskWaiting")
