"""The original's protocol written in Python: the loop of bench/latency.c's `original`
mode, command for command, each a round trip of its own, on a plain blocking socket with
hiredis' reader (no client library in between).

The latency scenario runs it beside resc and the C loop: the difference between the two
loops is what the language alone costs on this machine, at the same protocol; what resc
adds on top of the Python loop is the cost of its own work (its rules, its atomic commit,
its accounting).

    python -m bench.original_python PORT INPUT TAKEN set|noset

Runs until SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from types import FrameType

import hiredis

_BRPOPLPUSH_TIMEOUT = b"1"


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: list[str]) -> int:
    port, input_queue, taken, variant = int(argv[0]), argv[1], argv[2], argv[3]
    with_set = variant == "set"
    named = taken.encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()
    pack, send, recv, feed, gets = (
        hiredis.pack_command,
        sock.sendall,
        sock.recv,
        reader.feed,
        reader.gets,
    )

    def call(*args: bytes | str) -> object:
        send(pack(args))  # type: ignore[arg-type]  # hiredis types it as a 1-tuple
        reply = gets()
        while reply is False:
            data = recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            feed(data)
            reply = gets()
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"Redis: {reply}")
        return reply

    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            event = call(b"BRPOPLPUSH", input_queue, taken, _BRPOPLPUSH_TIMEOUT)
            if not isinstance(event, bytes):
                continue
            parts = event.split(b"/")
            if len(parts) != 3 or parts[0] != b"acq":
                continue
            plant, product = parts[1], parts[2]
            task = b"trt/%s/%s" % (plant, product)
            queue = b"trt/%s/todo-queue" % plant
            push = True
            if with_set:
                dedup = b"trt/%s/todo-set" % plant
                push = call(b"ZSCORE", dedup, task) is None
                if push:
                    call(b"ZADD", dedup, str(int(time.time())), task)
            if push:
                call(b"LPUSH", queue, task)
                call(b"PUBLISH", b"events", b"%s TRIGGER %s -> %s" % (named, event, task))
            call(b"LREM", taken, b"1", event)
            call(b"PUBLISH", b"events", b"%s DONE %s" % (named, event))
    except _Stop:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
