"""The log line writer: JSON lines batched into few system calls, never split, never held back long."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from dispatcher.logs import LineWriter


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)
    os.close(w)


def read_all(fd: int) -> list[bytes]:
    """Each os.read of a pipe returns what one or more writes put there; collect the writes' lines."""
    try:
        return os.read(fd, 1 << 20).splitlines()
    except BlockingIOError:
        return []


async def test_info_lines_are_written_together_shortly_after(pipe):
    r, w = pipe
    writer = LineWriter(w)
    writer.info(b'{"event":"one"}')
    writer.info(b'{"event":"two"}')
    assert read_all(r) == []  # held for a moment, to share one write
    await asyncio.sleep(LineWriter.FLUSH_AFTER * 2)
    assert read_all(r) == [b'{"event":"one"}', b'{"event":"two"}']


async def test_a_warning_goes_out_at_once_after_the_lines_before_it(pipe):
    r, w = pipe
    writer = LineWriter(w)
    writer.info(b'{"event":"first"}')
    writer.warning(b'{"event":"trouble"}')
    assert read_all(r) == [b'{"event":"first"}', b'{"event":"trouble"}']


def test_without_an_event_loop_every_line_is_written_at_once(pipe):
    r, w = pipe
    writer = LineWriter(w)
    writer.info(b'{"event":"cli"}')
    assert read_all(r) == [b'{"event":"cli"}']


async def test_each_write_holds_whole_lines_within_pipe_buf(pipe):
    """Processes sharing stderr can only interleave whole writes; a write of at most PIPE_BUF bytes of
    whole lines keeps every line intact."""
    r, w = pipe
    writes: list[bytes] = []
    writer = LineWriter(w)
    writer._write = writes.append  # type: ignore[method-assign,assignment]  # record the writes instead of making them
    lines = [b'{"event":"%d","pad":"%s"}' % (i, b"x" * (i * 7 % 300)) for i in range(200)]
    for line in lines:
        writer.info(line)
    writer.flush()
    assert len(writes) > 1
    assert all(len(chunk) <= LineWriter.PIPE_BUF and chunk.endswith(b"\n") for chunk in writes)
    assert b"".join(writes).splitlines() == lines


def test_a_stderr_without_a_descriptor_still_gets_json_lines(monkeypatch):
    """Embedded or captured: sys.stderr may be an object with no file descriptor."""
    import io

    import orjson
    import structlog

    from dispatcher import logs

    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    try:
        logs.configure("info", "json")
        logs.get_logger("t").info("hello", n=1)
    finally:
        structlog.reset_defaults()
    line = orjson.loads(captured.getvalue().splitlines()[0])
    assert line["event"] == "hello" and line["n"] == 1


def test_a_canonical_line_is_the_line_log_info_writes(pipe, monkeypatch):
    """The per-webhook line skips structlog's chain for speed; what it writes must not differ."""
    import orjson
    import structlog

    from dispatcher import logs

    r, w = pipe

    class Stderr:  # the service's stderr: a descriptor, not a terminal
        def fileno(self) -> int:
            return w

        def isatty(self) -> bool:
            return False

    monkeypatch.setattr("sys.stderr", Stderr())
    fields = {"callback_id": "cb_1", "webhook_id": "dlv_2", "events": 1, "status": None, "note": "whsec_abcdefghijkl"}
    try:
        logs.configure("info", "json")
        log = logs.get_logger("t")
        log.info("webhook", **fields)
        logs.canonical(log, "webhook", **fields)
        logs._Canonical.writer.flush()  # type: ignore[union-attr]
    finally:
        structlog.reset_defaults()
        logs._Canonical.writer = None
    via_structlog, direct = (orjson.loads(line) for line in read_all(r))
    assert direct.pop("timestamp").endswith("Z") and via_structlog.pop("timestamp").endswith("Z")
    assert list(direct.items()) == list(via_structlog.items())
    assert direct["note"] == "[redacted]"


def test_canonical_lines_follow_the_level(monkeypatch, capsys):
    """Above info, the canonical line is dropped like any info line."""
    import structlog

    from dispatcher import logs

    try:
        logs.configure("warning", "json")
        assert logs._Canonical.writer is None
        logs.canonical(logs.get_logger("t"), "webhook", n=1)
    finally:
        structlog.reset_defaults()
    assert "webhook" not in capsys.readouterr().err
