"""A lean open-loop HTTP/1.1 load generator for `rtrec bench serve`.

The generator shares the machine's two cores with the API and the store, so its own CPU per request is taken
from what it measures: aiohttp (used before) cost about 0.25-0.29 ms per request here and could not offer more
than about 1,500-1,750 requests/s. This one writes prebuilt request bytes on keep-alive connections and parses
answers with httptools (the parser uvicorn uses), on uvloop.

Open loop: a request is sent at its scheduled time whether or not earlier ones were answered (a new connection
is opened when none is free), and its latency counts from the scheduled time, so queueing is measured
instead of hidden.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools


@dataclass
class Answer:
    status: int  # 0: no answer (the connection failed or the generator ran out of connections)
    body: bytes
    latency_s: float  # from the scheduled send time


def _failed(scheduled: float) -> Answer:
    return Answer(0, b"", time.perf_counter() - scheduled)


@dataclass
class _Exchange:
    scheduled: float
    done: Callable[[Answer], None]
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pool: LoadPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, request: bytes, exchange: _Exchange) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.transport.write(request)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.body += body

    def on_message_complete(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        status = self.parser.get_status_code()
        exchange.done(Answer(status, bytes(exchange.body), time.perf_counter() - exchange.scheduled))
        self.pool.release(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()

    def _fail(self) -> None:
        exchange, self.exchange = self.exchange, None
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
        if exchange is not None:
            exchange.done(_failed(exchange.scheduled))
        if self.transport is not None:
            self.transport.close()


class LoadPool:
    """Keep-alive connections to one host; ``get(path, scheduled, done)`` sends a GET on a free one."""

    def __init__(self, host: str, port: int, headers: dict[str, str], max_connections: int = 2048) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items()).encode()
        self.max_connections = max_connections
        self.free: deque[_Connection] = deque()
        self.open = 0

    def release(self, connection: _Connection) -> None:
        self.free.append(connection)

    def forget(self, connection: _Connection) -> None:
        if connection in self.free:
            self.free.remove(connection)
        self.open -= 1

    async def get(self, path: str, scheduled: float, done: Callable[[Answer], None]) -> None:
        request = b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head + b"\r\n"
        exchange = _Exchange(scheduled, done)
        if self.free:
            self.free.popleft().send(request, exchange)
            return
        if self.open >= self.max_connections:
            done(_failed(scheduled))  # an error: the generator itself ran out of connections
            return
        self.open += 1
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self.open -= 1
            done(_failed(scheduled))
            return
        connection.send(request, exchange)

    def close(self) -> None:
        for connection in list(self.free):
            if connection.transport is not None:
                connection.transport.close()
        self.free.clear()
