"""A minimal HTTP/1.1 client over asyncio streams, for the benchmark's own load and setup.

httpx costs this machine 2-5 ms of CPU per request (its connection pool scans every waiting
request and connection at each step): creating 4,000 users kept the client at 94 % of a
core while the server idled at 20 %, and the open-loop generator measured its own queue.
This speaks just what the benchmark needs: one keep-alive connection, one request at a time,
Content-Length or chunked answers; ~0.2 ms of CPU per request.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any, NamedTuple

# Servers close a keep-alive connection after ~5 s idle (uvicorn's and Hypercorn's default);
# one idle longer than this is opened anew rather than found closed halfway through a request.
IDLE_REOPEN_S = 2.0


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self, what: str) -> None:
        if not 200 <= self.status <= 299:
            raise SystemExit(f"{what}: HTTP {self.status} {self.body[:300]!r}")


class RawConnection:
    """One keep-alive HTTP/1.1 connection to ``api`` (http://host:port), one request at a
    time, with ``headers`` on every request."""

    def __init__(self, api: str, headers: dict[str, str]) -> None:
        url = urllib.parse.urlsplit(api)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        fields = {"Host": f"{self._host}:{self._port}", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._used = 0.0

    async def request(self, method: str, path: str, body: bytes = b"") -> Answer:
        if self._streams is not None and time.monotonic() - self._used > IDLE_REOPEN_S:
            await self.aclose()
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        length = f"Content-Length: {len(body)}\r\n" if body or method != "GET" else ""
        writer.write(f"{method} {path} HTTP/1.1\r\n{self._head}{length}\r\n".encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                content += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        else:
            content = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        self._used = time.monotonic()
        return Answer(status, headers, content)

    async def aclose(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
