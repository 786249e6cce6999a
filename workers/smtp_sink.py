"""A real SMTP server (aiosmtpd) that stores every message it receives as a ``.eml`` file.

Development: ``python -m workers.smtp_sink --port 8025 --dir var/mail``. Tests run the
same class in-process and read what arrived.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from workers.runtime import new_event_loop


class _StoreHandler:
    def __init__(
        self, directory: Path, refuse: frozenset[str] = frozenset(), *, pipelining: bool = True
    ) -> None:
        self.directory = directory
        self.refuse = refuse
        self.pipelining = pipelining
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Says PIPELINING (RFC 2920), as mail servers in production do: aiosmtpd reads
        commands one by one from its stream, so commands sent together are answered in order,
        but it does not say so itself."""
        session.host_name = hostname  # the hook's duty (aiosmtpd's handle_EHLO contract)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() in self.refuse:  # a mailbox that does not exist
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            n = next(self._counter)
        name = f"{time.time_ns()}-{n:06d}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(envelope.content)
        tmp.rename(self.directory / name)  # readers never see half a message
        return "250 Message accepted for delivery"


class MailSink:
    """Start/stop an SMTP server on 127.0.0.1 that writes messages into ``directory``."""

    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        refuse: frozenset[str] = frozenset(),
        pipelining: bool = True,
    ) -> None:
        """``refuse``: addresses answered ``550`` (tests of undeliverable mail);
        ``pipelining``: whether EHLO says PIPELINING."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if port == 0:
            import socket

            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self._controller = Controller(
            _StoreHandler(
                self.directory, frozenset(a.lower() for a in refuse), pipelining=pipelining
            ),
            hostname=host,
            port=port,
            loop=new_event_loop(),
        )

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[EmailMessage]:
        found = []
        for path in sorted(self.directory.glob("*.eml")):
            parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workers.smtp_sink", description="SMTP server that stores mail as .eml files"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="var/mail")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sink = MailSink(Path(args.dir), args.host, args.port).start()
    print(f"mail sink on {sink.url}, writing to {sink.directory}/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
