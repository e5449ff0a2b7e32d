"""``voice-engine bench --target``: a Media Streams echo that is not ours (the README's, written
with ``websockets``) measured and checked against an independent client; our own server through
its webhook against the built-in bench's path; hostile targets counted, never hanging; saved
results compared side by side; per-target options."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

from bench.cli import add_bench_command
from bench.procs import start_server
from bench.scenarios import frame_round_trip
from bench.target_options import TargetSpec, targets_from
from bench.targets import RunPlan, run_target
from conftest import ROOT
from engine.media.protocol import Media, MediaStreamParser, Start, Stop, media_message

PNG = b"\x89PNG\r\n\x1a\n"
FRAME = bytes(range(160))


def readme_echo_server() -> str:
    """The README's worked example: a Media Streams echo written with ``websockets``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Benchmark your own bot")
    (block,) = re.findall(
        r"^```python\n(# mediastreams_echo\.py.*?)^```$", text[start:], re.S | re.M
    )
    return block


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang guard: every target must end by itself well before
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def bench_async(*args: str) -> subprocess.CompletedProcess[bytes]:
    """:func:`bench` while this test's trio peers serve (a hang fails the test)."""
    with trio.fail_after(120):
        return await trio.run_process(
            [sys.executable, "-m", "engine", "bench", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The README's echo server in its own process: its stream URL and PID."""
    script = tmp_path_factory.mktemp("echo") / "mediastreams_echo.py"
    script.write_text(readme_echo_server())
    process = subprocess.Popen(
        [sys.executable, str(script), "0"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on port "), line
    yield f"ws://127.0.0.1:{int(line.split()[-1])}/echo", process.pid
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def measured(
    third_party: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    url, pid = third_party
    out = tmp_path_factory.mktemp("bench")
    result = bench(
        "--target", url, "--label", "websockets-echo", "--target-pid", str(pid),
        "--calls", "1,2", "--duration", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "comparison.json").read_text())


def independent_round_trips(url: str, count: int = 100) -> list[float]:
    """Round trips (ms) measured by another client (websockets' own), one frame each 20 ms."""
    from websockets.sync.client import connect

    sid = "MZ" + "0" * 32
    rtts = []
    with connect(url, compression=None) as ws:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {"streamSid": sid, "callSid": "CA" + "0" * 32, "customParameters": {}}
        ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start}))
        due = time.monotonic()
        for i in range(count):
            payload = base64.b64encode(bytes([i % 256]) + FRAME[1:]).decode()
            message = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
            sent = time.perf_counter()
            ws.send(json.dumps(message))
            echo = json.loads(ws.recv(timeout=5))
            rtts.append((time.perf_counter() - sent) * 1000)
            assert echo["media"]["payload"] == payload
            due += 0.02
            time.sleep(max(0.0, due - time.monotonic()))
        ws.send(json.dumps({"event": "stop", "sequenceNumber": str(count + 2), "streamSid": sid}))
    return rtts


def test_a_third_party_echo_is_detected_and_swept_in_the_three_formats(
    measured: tuple[Path, dict[str, object]],
) -> None:
    out, report = measured
    (target,) = report["targets"]  # type: ignore[misc]
    assert target["target"]["label"] == "websockets-echo" and target["target"]["kind"] == "stream"
    assert target["detection"]["mode"] == "echo" and target["mode"] == "echo"
    steps = target["frame_round_trip"]
    assert [s["calls"] for s in steps] == [1, 2]
    for step in steps:
        assert (
            step["frames_sent"] == step["calls"] * 100 and step["admitted_calls"] == step["calls"]
        )
        assert step["lost"] == 0 and step["mismatched"] == 0 and step["failed_calls"] == 0
        assert step["server_cpu_us_per_frame"] is not None  # --target-pid: its CPU is known
        assert step["ceiling"] is None  # not a voice-engine server: no /metrics read
    assert (target["capacity_bound"]["kind"] == "sweep") is (target["capacity"] == 2)
    assert report["machine"]["cpus"] >= 1 and "python" in report["versions"]
    markdown = (out / "comparison.md").read_text()
    assert "| | websockets-echo |" in markdown and "### Capacity curve" in markdown
    for name in ("compare_rtt_cdf.png", "compare_capacity.png"):
        assert (out / name).read_bytes()[:8] == PNG
    own = json.loads((out / "websockets-echo" / "results.json").read_text())
    assert own["frame_round_trip"] == steps
    assert "## Frame round trip" in (out / "websockets-echo" / "results.md").read_text()


def test_its_round_trip_agrees_with_an_independent_clients(
    third_party: tuple[str, int], measured: tuple[Path, dict[str, object]]
) -> None:
    url, _ = third_party
    ours = measured[1]["targets"][0]["frame_round_trip"][0]  # type: ignore[index]
    theirs = statistics.median(independent_round_trips(url))
    # Within the noise of one machine (a 20 ms frame mispaired would be far outside).
    assert abs(ours["p50_ms"] - theirs) < max(1.0, 0.5 * max(ours["p50_ms"], theirs))


def test_our_server_through_its_webhook_measures_as_the_built_in_path(tmp_path: Path) -> None:
    audio = tmp_path / "caller.ulaw"
    audio.write_bytes(FRAME * 300)
    server = start_server("echo", cpu=None, log=tmp_path / "server.log")
    try:
        built_in = frame_round_trip(server, 2, 2.0, generator_cpu=None, audio=audio)
        spec = TargetSpec(
            url=server.url + "/twilio/voice",
            label="ours",
            auth_token=server.auth_token,
            pids=(server.process.pid,),
        )
        plan = RunPlan((2,), 2.0, (), 0, audio, tmp_path, None, None)
        result = run_target(spec, plan)
    finally:
        assert server.stop() == 0
    assert result["target"]["kind"] == "webhook" and result["mode"] == "echo"
    assert result["target"]["metrics"] is True  # found at the webhook's origin
    (target,) = result["frame_round_trip"]
    for step in (asdict(built_in), target):
        assert step["frames_sent"] == 200 and step["lost"] == 0 and step["failed_calls"] == 0
    assert target["ceiling"] == built_in.ceiling is not None
    a, b = target["p50_ms"], built_in.p50_ms
    assert abs(a - b) < max(1.0, 0.5 * max(a, b))
    assert "stage" in result["frame_steps"] or "stage" in result["frame_steps_missing"]


# ------------------------------------------------------------------------- hostile targets


class Peer:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)

    async def events(self) -> list[object]:
        data = await self.stream.receive_some(65536)
        if not data:
            return [None]
        self.ws.receive_data(data)
        return list(self.ws.events())

    async def accept(self) -> None:
        while not any(isinstance(e, Request) for e in await self.events()):
            pass
        await self.stream.send_all(self.ws.send(AcceptConnection()))


async def closes_early(peer: Peer) -> None:
    await peer.accept()
    seen = 0
    while seen < 5:
        seen += sum(isinstance(e, TextMessage) for e in await peer.events())
    await peer.stream.send_all(peer.ws.send(CloseConnection(code=1011, reason="bye")))
    await trio.sleep(30)


async def garbage(peer: Peer) -> None:
    await peer.accept()
    await peer.stream.send_all(peer.ws.send(Message(data="{this is not json")))
    await trio.sleep(30)


async def never_answers(peer: Peer) -> None:
    await peer.stream.receive_some(65536)  # the request, never answered
    await trio.sleep(60)


async def one_way(peer: Peer) -> None:
    """A webhook whose TwiML starts a one-way stream; the stream then only listens."""
    head = await peer.stream.receive_some(65536)
    if head.startswith(b"POST"):
        twiml = b'<Response><Start><Stream url="/media"/></Start><Pause length="60"/></Response>'
        await peer.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%b" % (len(twiml), twiml)
        )
        return
    if head.startswith(b"GET /metrics"):  # the bench asks whether it is a voice-engine server
        await peer.stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return
    peer.ws.receive_data(head)
    await peer.stream.send_all(peer.ws.send(AcceptConnection()))
    while None not in await peer.events():
        pass


async def serve(nursery: trio.Nursery, behaviour: Callable[[Peer], Awaitable[None]]) -> int:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await behaviour(Peer(stream))

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


HOSTILE = [
    pytest.param(closes_early, "ws", "auto", "closed the stream while streaming (code 1011)"),
    pytest.param(closes_early, "ws", "echo", "closed the stream while streaming (code 1011)"),
    pytest.param(garbage, "ws", "auto", "invalid JSON"),
    pytest.param(never_answers, "ws", "auto", "no handshake answer within 2 s"),
    pytest.param(never_answers, "http", "echo", "no webhook answer within 2 s"),
    pytest.param(one_way, "http", "auto", "one-way stream (<Start><Stream>)"),
]


@pytest.mark.parametrize(("behaviour", "scheme", "mode", "error"), HOSTILE)
async def test_a_hostile_target_is_reported_with_its_errors_and_never_hangs(
    behaviour: Callable[[Peer], Awaitable[None]],
    scheme: str,
    mode: str,
    error: str,
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, behaviour)
        url = f"{scheme}://127.0.0.1:{port}/" + ("voice" if scheme == "http" else "media")
        done = await bench_async(
            "--target", url, "--mode", mode, "--calls", "1,2", "--duration", "1",
            "--setup-timeout", "2", "--out", str(tmp_path),
        )  # fmt: skip
        nursery.cancel_scope.cancel()
    assert done.returncode == 3, done.stderr.decode()  # nothing got through
    (target,) = json.loads((tmp_path / "comparison.json").read_text())["targets"]
    assert target["errors"] and any(error in e for e in target["errors"]), target["errors"]
    if mode == "echo":  # the sweep ran: its first step counted the failed calls, then stopped
        (step,) = target["frame_round_trip"]
        assert step["failed_calls"] == step["calls"] == 1 and step["admitted_calls"] == 0
    else:  # the detection call failed: nothing more was tried
        assert target["mode"] is None and target["detection"]["mode"] is None
    assert "## Errors" in (tmp_path / "comparison.md").read_text()


async def test_a_wss_target_with_a_private_ca_is_measured_through_tls(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    async def echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
        peer = Peer(stream)
        await peer.accept()
        parser, sid = MediaStreamParser(), ""
        while True:
            for event in await peer.events():
                if event is None or isinstance(event, CloseConnection):
                    return
                if not isinstance(event, TextMessage):
                    continue
                message = parser.receive(event.data)
                if isinstance(message, Start):
                    sid = message.stream_sid
                elif isinstance(message, Media):
                    await peer.stream.send_all(
                        peer.ws.send(Message(data=media_message(sid, message.payload)))
                    )
                elif isinstance(message, Stop):
                    await peer.stream.send_all(peer.ws.send(CloseConnection(code=1000)))
                    return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, echo, 0, context, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        done = await bench_async(
            "--target", f"wss://localhost:{port}/media", "--ca-file", str(tmp_path / "ca.pem"),
            "--calls", "2", "--duration", "1", "--out", str(tmp_path),
        )  # fmt: skip
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr.decode()
    (target,) = json.loads((tmp_path / "comparison.json").read_text())["targets"]
    assert target["mode"] == "echo" and target["errors"] == []
    (step,) = target["frame_round_trip"]
    assert step["frames_sent"] == 100 and step["lost"] == 0 and step["mismatched"] == 0


# ----------------------------------------------------------------------- side by side, options


def test_saved_results_are_compared_side_by_side_without_a_run(
    measured: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    saved = measured[0] / "websockets-echo" / "results.json"
    done = bench(
        "--compare", str(saved), str(measured[0] / "comparison.json"), "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "comparison.json").read_text())
    labels = [t["target"]["label"] for t in report["targets"]]
    assert labels == ["websockets-echo", "websockets-echo #2"]
    assert "| | websockets-echo | websockets-echo #2 |" in (tmp_path / "comparison.md").read_text()
    assert not (tmp_path / "caller.ulaw").exists()  # nothing ran


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_command(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_options_after_a_target_are_its_own_and_before_any_are_everyones() -> None:
    args = parse(
        "--auth-token", "T0", "--param", "tenant=1",
        "--target", "ws://a:1/x", "--param", "x=2", "--target-pid", "5", "--target-pid", "6",
        "--target", "https://b/voice", "--auth-token", "T1", "--mode", "agent", "--label", "B",
        "--target", "engine:turn-echo", "--insecure-tls",
    )  # fmt: skip
    a, b, ours = targets_from(args)
    assert (a.url, a.auth_token, a.parameters, a.pids) == (
        "ws://a:1/x",
        "T0",
        {"tenant": "1", "x": "2"},
        (5, 6),
    )
    assert (a.label, a.mode, a.kind) == ("a:1/x", "auto", "stream")
    assert (b.auth_token, b.mode, b.label, b.kind, b.pids) == ("T1", "agent", "B", "webhook", ())
    assert ours.is_engine and ours.pipeline() == "turn-echo" and ours.insecure_tls
    assert TargetSpec("engine", "e", mode="agent").pipeline() == "turn-echo"
    assert TargetSpec("engine", "e").pipeline() == "echo"
    assert "T0" not in json.dumps(a.describe()) and a.describe()["parameters"] == ["tenant", "x"]
    with pytest.raises(SystemExit):
        parse("--target", "ftp://nope")
