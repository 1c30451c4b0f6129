"""The serve benchmark's load generator (``deploy.load_generator``) against a small HTTP server on loopback:
every request gets exactly one answer with its status and body, connections are reused when free and opened
when not (open loop), and a connection the server closes or a refused connection is an answer with status 0,
not a hang."""

from __future__ import annotations

import asyncio
import time

import uvloop

from deploy.load_generator import Answer, LoadPool


async def _server(delay_s: float = 0.0, gate: asyncio.Event | None = None) -> tuple[asyncio.Server, int, list[int]]:
    """Answers ``GET /ok/<n>`` with 200 and body ``<n>``, ``/missing`` with 404, ``/close`` by closing.

    With a ``gate``, no request is answered before the gate opens, so a test can have every request in flight
    at once however slowly the machine opens connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            path = head.split(b" ", 2)[1].decode()
            await asyncio.sleep(delay_s)
            if gate is not None:
                await gate.wait()
            if path == "/close":
                writer.close()
                return
            status, body = (200, path.rsplit("/", 1)[1].encode()) if path.startswith("/ok/") else (404, b"no")
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def _ask(pool: LoadPool, paths: list[str], gate: asyncio.Event | None = None) -> list[Answer]:
    answers: dict[int, Answer] = {}
    now = time.perf_counter()
    for i, path in enumerate(paths):
        await pool.get(path, now, lambda answer, i=i: answers.__setitem__(i, answer))
    if gate is not None:
        gate.set()
    for _ in range(500):
        if len(answers) == len(paths):
            break
        await asyncio.sleep(0.01)
    return [answers[i] for i in range(len(paths))]


def test_every_request_gets_its_own_answer_on_reused_connections() -> None:
    async def run() -> None:
        gate = asyncio.Event()
        server, port, connections = await _server(delay_s=0.01, gate=gate)
        pool = LoadPool("127.0.0.1", port, {"Authorization": "Bearer k"})
        first = await _ask(pool, [f"/ok/{i}" for i in range(20)] + ["/missing"], gate)
        assert [a.body for a in first[:20]] == [str(i).encode() for i in range(20)]
        assert all(a.status == 200 and a.latency_s > 0.005 for a in first[:20]) and first[20].status == 404
        opened = len(connections)
        assert opened == 21  # all in flight at once: open loop opens a connection per request in flight
        again = await _ask(pool, [f"/ok/{i}" for i in range(10)])  # after they were answered: reused
        assert [a.status for a in again] == [200] * 10 and len(connections) == opened
        pool.close()
        server.close()

    uvloop.run(run())


def test_a_closed_or_refused_connection_is_an_answer_with_status_0() -> None:
    async def run() -> None:
        server, port, _ = await _server()
        pool = LoadPool("127.0.0.1", port, {})
        closed = await _ask(pool, ["/close", "/ok/1"])
        assert closed[0].status == 0 and closed[1].status == 200
        server.close()
        await server.wait_closed()
        refused = await _ask(LoadPool("127.0.0.1", port, {}), ["/ok/2"])
        assert refused[0].status == 0

    uvloop.run(run())
