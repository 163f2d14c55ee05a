"""Following an answer (bridge/domain/streaming.py) from the in-process Dust simulator: to its end,
past the answer timeout, over a lost stream, and when its caller stops listening."""

from __future__ import annotations

import logging

import anyio
import pytest
from pydantic import SecretStr

from bridge.domain.relay import RelayOutcome
from bridge.domain.streaming import AnswerStreamer, Listener, StreamSettings, StreamTarget
from bridge.dust.client import DustClient
from bridge.dust.models import MessageContext
from bridge.errors import UpstreamFailure
from bridge.observability.metrics import Metrics
from bridge.simulator.faults import FailRule
from bridge.simulator.state import Simulator

LONG_RUNNER = "longrun001"  # says one sentence, then works quietly for 15 s


def settings(answer_timeout_seconds: float = 30.0) -> StreamSettings:
    return StreamSettings(
        heartbeat_seconds=15.0,
        coalesce_seconds=0.0,
        coalesce_chars=200,
        show_chain_of_thought=False,
        answer_timeout_seconds=answer_timeout_seconds,
    )


async def asked(dust: DustClient, agent: str, message: str) -> StreamTarget:
    """A new conversation asking `agent`, as the agent message to follow."""
    created = await dust.create_conversation(
        content=message, mentions=[agent], context=MessageContext("tester", "Europe/Paris")
    )
    assert created.agent_message is not None
    return StreamTarget(created.conversation.s_id, created.agent_message.s_id, handle="dmc_test")


def cancelled(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("bridge_cancellations_total")


def cancels(sim: Simulator) -> list[list[str]]:
    return [cancel["messageIds"] for cancel in sim.stats.cancels]


@pytest.fixture
def sim(simulator: tuple[str, Simulator]) -> Simulator:
    return simulator[1]


async def test_an_answer_is_relayed_as_progress_to_its_end(dust: DustClient) -> None:
    metrics = Metrics()
    streamer = AnswerStreamer(dust, settings(), metrics)
    seen: list[str] = []

    async def progress(text: str) -> None:
        seen.append(text)
        assert streamer.active == 1  # counted while it streams

    outcome = await streamer.follow(await asked(dust, "echo000001", "hello"), Listener(progress=progress))
    assert outcome.text == "Echo (turn 1): hello" and outcome.terminal is not None
    assert "".join(seen).endswith("hello")
    assert streamer.active == 0
    assert metrics.registry.get_sample_value("bridge_answer_duration_seconds_count") == 1


async def test_past_the_answer_timeout_the_generation_is_cancelled_and_the_handle_named(
    dust: DustClient, sim: Simulator
) -> None:
    metrics = Metrics()
    streamer = AnswerStreamer(dust, settings(answer_timeout_seconds=0.5), metrics)
    target = await asked(dust, LONG_RUNNER, "too long")
    with pytest.raises(UpstreamFailure, match=r"did not finish within 0\.5s.*Conversation handle: dmc_test"):
        await streamer.follow(target, Listener())
    assert cancels(sim) == [[target.message_id]]
    assert cancelled(metrics) == 1 and streamer.active == 0


async def test_a_lost_stream_leaves_the_generation_running_and_says_how_to_read_it(
    simulator: tuple[str, Simulator],
) -> None:
    url, sim = simulator
    async with DustClient(
        url, "demo", SecretStr("sk-test0123456789"), stream_max_reconnects=2, reconnect_delay=0.01
    ) as dust:
        target = await asked(dust, LONG_RUNNER, "lost")
        sim.faults.add([FailRule(match="/events", method="GET", status=503, count=100)])
        with pytest.raises(
            UpstreamFailure, match=r"stream from Dust was lost.*wait_for_answer\(conversation='dmc_test'\)"
        ):
            await AnswerStreamer(dust, settings(), Metrics()).follow(target, Listener())
    assert cancels(sim) == []


async def follow_then_stop(dust: DustClient, listener: Listener) -> tuple[StreamTarget, Metrics]:
    """Follow the long runner until its first sentence arrives, then cancel the caller."""
    metrics = Metrics()
    target = await asked(dust, LONG_RUNNER, "stop")
    first = anyio.Event()

    async def progress(text: str) -> None:
        first.set()

    listener.progress = progress
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(AnswerStreamer(dust, settings(), metrics).follow, target, listener)
        with anyio.fail_after(10):
            await first.wait()
        tasks.cancel_scope.cancel()
    return target, metrics


async def test_a_caller_cancelled_for_good_stops_the_generation_at_dust(
    dust: DustClient, sim: Simulator
) -> None:
    target, metrics = await follow_then_stop(dust, Listener())
    assert cancels(sim) == [[target.message_id]]
    assert cancelled(metrics) == 1


async def test_a_caller_whose_client_only_timed_out_keeps_the_generation(
    dust: DustClient, sim: Simulator
) -> None:
    partials: list[RelayOutcome] = []

    async def keep(partial: RelayOutcome) -> bool:
        partials.append(partial)
        return True

    _, metrics = await follow_then_stop(dust, Listener(keep_on_cancel=keep))
    assert cancels(sim) == []
    assert cancelled(metrics) == 0
    [partial] = partials  # asked once, with where the stream stood (for wait_for_answer to resume)
    assert partial.last_event_id is not None and partial.notifications > 0


async def test_a_cancel_dust_refuses_is_logged_not_raised(
    dust: DustClient, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    target = await asked(dust, "echo000001", "done already")
    sim.faults.add([FailRule(match="/cancel", method="POST", status=500)])
    with caplog.at_level(logging.WARNING, logger="bridge.domain.streaming"):
        await AnswerStreamer(dust, settings(), Metrics()).cancel_at_dust(
            target.conversation_id, target.message_id
        )
    assert "could not cancel the generation at Dust" in caplog.text
