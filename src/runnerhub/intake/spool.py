"""The spool: a local, fsync'd journal of verified deliveries for while PostgreSQL is
unreachable; the other half of I1 (a 2xx means committed in PostgreSQL *or* fsync'd here).

The directory holds:

- ``<seq>.seg``: segments, written in order. A segment is ``MAGIC`` then records, each
  ``u32 length | u32 CRC32(payload) | payload``; the payload is ``u32 n | n bytes of meta
  JSON (guid, event, hook id, received-at, node) | the body exactly as received`` (the
  bytes whose signature was checked). A new segment is started past ``segment_bytes`` and
  at every open: an old segment is never appended to again, so a torn record (a crash
  mid-write, never acknowledged) can only be a segment's last, and reading stops there.
- ``checkpoint``: where replay stands (the first record not yet replayed), replaced
  atomically after each replayed batch. Segments before it are deleted.
- ``lock``: held (flock) by the one process that owns the spool.
- ``quarantine/``: records PostgreSQL would not take, kept for an operator.

Appends that arrive together share one write and one fsync (group commit), done in a
thread so the event loop never waits on the disk. The index of undrained records lives in
memory and is rebuilt from the segments on open.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from runnerhub import metrics
from runnerhub.config import Settings
from runnerhub.logs import Throttle

log = structlog.get_logger("runnerhub.intake.spool")

MAGIC = b"RHSPOOL1"
_FRAME = struct.Struct(">II")  # payload length, CRC32 of the payload
_META = struct.Struct(">I")  # meta JSON length
MAX_RECORD = 64 * 1024 * 1024  # a length beyond this is garbage, not a record
_SUFFIX = ".seg"
_CHECKPOINT = "checkpoint"
SLOW_WRITE_S = 0.1  # a group write this slow is logged (at most 10 lines in 10 s)


class SpoolError(Exception):
    """The spool cannot take a delivery (disabled, a disk error, another owner)."""


class SpoolFull(SpoolError):
    """Taking the delivery would pass `max_bytes` of undrained data."""


@dataclass(frozen=True)
class VerifiedDelivery:
    """A delivery whose signature checked out: everything needed to record it exactly."""

    guid: str
    event: str
    hook_id: int | None
    body: bytes
    received_at: float  # Unix time
    node: str  # the node that received it


@dataclass(frozen=True)
class Entry:
    """Where one undrained record lies."""

    segment: int
    offset: int
    size: int
    received_at: float

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class SpoolStats:
    enabled: bool
    writable: bool
    entries: int  # records not yet replayed
    bytes: int  # their size on disk
    oldest_age_s: float  # age of the oldest of them (0 when empty)
    max_bytes: int
    last_error: str | None


def encode(d: VerifiedDelivery) -> bytes:
    """One framed record."""
    meta = json.dumps(
        {
            "guid": d.guid,
            "event": d.event,
            "hook_id": d.hook_id,
            "received_at": d.received_at,
            "node": d.node,
        },
        separators=(",", ":"),
    ).encode()
    payload = _META.pack(len(meta)) + meta + d.body
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> VerifiedDelivery:
    """A record's payload (checksum already verified); ValueError if it is not one."""
    if len(payload) < _META.size:
        raise ValueError("payload shorter than its header")
    (n,) = _META.unpack_from(payload)
    try:
        meta = json.loads(payload[_META.size : _META.size + n])
        guid, event, hook_id = meta["guid"], meta["event"], meta["hook_id"]
        received_at, node = float(meta["received_at"]), meta["node"]
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad record metadata: {exc}") from exc
    if not (isinstance(guid, str) and isinstance(event, str) and isinstance(node, str)):
        raise ValueError("bad record metadata: guid, event and node must be strings")
    if hook_id is not None and not isinstance(hook_id, int):
        raise ValueError("bad record metadata: hook_id must be an integer")
    return VerifiedDelivery(guid, event, hook_id, payload[_META.size + n :], received_at, node)


def parse_frame(raw: bytes) -> VerifiedDelivery | None:
    """One whole framed record as read back, or None when it fails its checksum."""
    if len(raw) < _FRAME.size:
        return None
    length, crc = _FRAME.unpack_from(raw)
    payload = raw[_FRAME.size :]
    if length != len(payload) or zlib.crc32(payload) != crc:
        return None
    try:
        return decode(payload)
    except ValueError:
        return None


@dataclass
class Scan:
    """The valid records of one segment from a start offset, and why reading stopped."""

    records: list[tuple[int, int, VerifiedDelivery]]  # (offset, size, record)
    end: int  # where the valid records end
    size: int  # the file's size
    problem: str | None  # None: read to the end cleanly


def scan_segment(path: Path, start: int = 0) -> Scan:
    data = path.read_bytes()
    if not data:
        return Scan([], 0, 0, None)  # created just before a crash: nothing was written
    if data[: len(MAGIC)] != MAGIC:
        return Scan([], 0, len(data), "not a spool segment")
    pos = max(start, len(MAGIC))
    records: list[tuple[int, int, VerifiedDelivery]] = []
    problem = None
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            problem = "torn record header"
            break
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if length > MAX_RECORD or end > len(data):
            problem = "torn record"
            break
        payload = data[pos + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            problem = "checksum mismatch"
            break
        try:
            records.append((pos, end - pos, decode(payload)))
        except ValueError as exc:
            problem = str(exc)
            break
        pos = end
    return Scan(records, pos, len(data), problem)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:020d}{_SUFFIX}"


def _segments(directory: Path) -> list[int]:
    return sorted(
        int(p.stem) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit() and p.is_file()
    )


def spool_dir(settings: Settings) -> Path:
    return settings.spool.dir or settings.node.state_dir / "spool"


@dataclass
class _Pending:
    frame: bytes
    received_at: float
    done: asyncio.Future[None]


@dataclass
class _Recovered:
    lock_fd: int
    entries: list[Entry]
    next_seq: int
    unreadable: int = 0
    notes: list[str] = field(default_factory=list)


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        enabled: bool = True,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 16 * 1024 * 1024,
        headroom: int = 64 * 1024,
        fsync: Callable[[int], None] = os.fsync,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.enabled = enabled
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.headroom = headroom  # `writable` while this much room is left
        self._fsync = fsync  # injectable: tests count the fsyncs of a group commit
        self._clock = clock  # injectable: tests make a write slow without waiting
        self._open_lock = asyncio.Lock()
        self._io = asyncio.Lock()  # guards the segment being written (fd, seq, size)
        self._opened = False
        self._lock_fd: int | None = None
        self._entries: deque[Entry] = deque()
        self._bytes = 0  # undrained bytes in the index
        self._reserved = 0  # accepted, not yet fsync'd
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._active = 0  # seq of the open segment (when _fd is set)
        self._next_seq = 0
        self._size = 0
        self._error: str | None = None
        self._slow = Throttle()

    @classmethod
    def from_settings(cls, settings: Settings) -> Spool:
        s = settings.spool
        return cls(
            spool_dir(settings),
            enabled=s.enabled,
            max_bytes=s.max_bytes,
            segment_bytes=min(s.segment_bytes, s.max_bytes),
        )

    # -- state -----------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Can the spool take deliveries now: enabled, no disk error, and room for at least
        `headroom` bytes (a typical delivery is a few KB)? For readiness: a node is ready
        while the database or the spool can take deliveries."""
        room = self.max_bytes - self._bytes - self._reserved
        return self.enabled and self._error is None and room >= self.headroom

    def stats(self) -> SpoolStats:
        oldest = time.time() - self._entries[0].received_at if self._entries else 0.0
        return SpoolStats(
            enabled=self.enabled,
            writable=self.writable,
            entries=len(self._entries),
            bytes=self._bytes,
            oldest_age_s=max(0.0, oldest),
            max_bytes=self.max_bytes,
            last_error=self._error,
        )

    # -- open and close --------------------------------------------------------------------

    async def open(self) -> None:
        """Take ownership of the directory and rebuild the index from it (idempotent)."""
        if self._opened or not self.enabled:
            return
        async with self._open_lock:
            if self._opened:
                return
            try:
                rec = await asyncio.to_thread(self._recover)
            except OSError as exc:
                self._error = f"cannot open the spool in {self.directory}: {exc}"
                raise SpoolError(self._error) from exc
            self._lock_fd = rec.lock_fd
            self._entries = deque(rec.entries)
            self._bytes = sum(e.size for e in rec.entries)
            self._next_seq = rec.next_seq
            self._error = None
            self._opened = True
            if rec.unreadable:
                metrics.SPOOL_UNREADABLE.inc(rec.unreadable)
            for note in rec.notes:
                log.warning("spool: skipped unreadable data", detail=note)
            metrics.SPOOL_ENTRIES.set_function(lambda: len(self._entries))
            metrics.SPOOL_BYTES.set_function(lambda: self._bytes)
            metrics.SPOOL_OLDEST_AGE.set_function(lambda: self.stats().oldest_age_s)
            if self._entries:
                log.info(
                    "spool opened with deliveries to replay",
                    directory=str(self.directory),
                    entries=len(self._entries),
                    bytes=self._bytes,
                )

    def _recover(self) -> _Recovered:
        created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        if created:
            self._sync_dir(self.directory.parent)
        lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(lock_fd)
            raise OSError(f"another process owns {self.directory}") from exc
        try:
            return self._index(lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    def _index(self, lock_fd: int) -> _Recovered:
        seg, off = self._read_checkpoint()
        rec = _Recovered(lock_fd, [], seg + 1)
        stale = []
        for seq in _segments(self.directory):
            rec.next_seq = max(rec.next_seq, seq + 1)
            if seq < seg:
                stale.append(seq)  # drained; the deletion was cut short
                continue
            scan = scan_segment(segment_path(self.directory, seq), off if seq == seg else 0)
            rec.entries += [Entry(seq, o, n, d.received_at) for o, n, d in scan.records]
            if scan.problem is not None:
                rec.unreadable += 1
                rec.notes.append(
                    f"segment {seq}: {scan.problem} at byte {scan.end}; "
                    f"{scan.size - scan.end} byte(s) ignored"
                )
        self._unlink(stale)
        return rec

    def _read_checkpoint(self) -> tuple[int, int]:
        try:
            data = json.loads((self.directory / _CHECKPOINT).read_text())
            return int(data["segment"]), int(data["offset"])
        except FileNotFoundError:
            return -1, 0
        except (ValueError, KeyError, TypeError) as exc:
            # Replaying from the start is safe (idempotent by GUID), only slower.
            log.warning("spool checkpoint unreadable; replaying everything", error=str(exc))
            return -1, 0

    async def close(self) -> None:
        """Finish pending appends and release the directory."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        async with self._io:
            await asyncio.to_thread(self._release)
        self._opened = False
        self._entries.clear()
        self._bytes = 0

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- appending -------------------------------------------------------------------------

    async def append(self, d: VerifiedDelivery) -> None:
        """Return once `d` is on disk (fsync'd). SpoolFull past `max_bytes`; SpoolError when
        the spool is disabled or the disk fails."""
        if not self.enabled:
            raise SpoolError("the spool is disabled")
        await self.open()
        frame = encode(d)
        if self._bytes + self._reserved + len(frame) > self.max_bytes:
            metrics.SPOOL_REJECTED.inc()
            raise SpoolFull(f"the spool holds {self._bytes} of at most {self.max_bytes} bytes")
        self._reserved += len(frame)  # before any await: concurrent appends cannot overshoot
        pending = _Pending(frame, d.received_at, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="spool-flush")
        await pending.done

    async def _flush(self) -> None:
        # Whatever arrives while a group is being written and fsync'd forms the next group.
        while self._pending:
            group, self._pending = self._pending, []
            size = sum(len(p.frame) for p in group)
            try:
                async with self._io:
                    began = self._clock()
                    places = await asyncio.to_thread(self._write, [p.frame for p in group])
                    self._timed(self._clock() - began, len(group))
            except OSError as exc:
                self._reserved -= size
                self._error = f"writing the spool failed: {exc}"
                log.error("spool write failed", error=str(exc), deliveries=len(group))
                for p in group:
                    if not p.done.done():
                        p.done.set_exception(SpoolError(self._error))
                continue
            self._reserved -= size
            self._error = None
            for p, (seq, offset) in zip(group, places, strict=True):
                self._entries.append(Entry(seq, offset, len(p.frame), p.received_at))
            self._bytes += size
            metrics.SPOOL_APPENDED.inc(len(group))
            for p in group:
                if not p.done.done():
                    p.done.set_result(None)

    def _timed(self, took_s: float, deliveries: int) -> None:
        metrics.SPOOL_WRITE.observe(took_s)
        if took_s >= SLOW_WRITE_S and (held := self._slow.admit(self._clock())) is not None:
            log.warning(  # each spooled delivery's answer waited this long for the disk
                "spool write slow",
                seconds=round(took_s, 3),
                deliveries=deliveries,
                **({"slow_writes_not_logged": held} if held else {}),
            )

    def _write(self, frames: list[bytes]) -> list[tuple[int, int]]:
        """Append frames (in a thread), rotating segments; fsync before returning."""
        places: list[tuple[int, int]] = []
        chunk: list[bytes] = []
        try:
            for frame in frames:
                full = self._size > len(MAGIC) and self._size + len(frame) > self.segment_bytes
                if self._fd is None or full:
                    self._sync(chunk)
                    chunk = [MAGIC]
                    self._rotate()
                places.append((self._active, self._size))
                chunk.append(frame)
                self._size += len(frame)
            self._sync(chunk)
        except OSError:
            # What reached this segment is unknown now: continue in a fresh one.
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            raise
        return places

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # already fsync'd
            self._fd = None
        seq = self._next_seq
        fd = os.open(segment_path(self.directory, seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._next_seq = seq + 1
        self._fd, self._active, self._size = fd, seq, len(MAGIC)
        self._sync_dir(self.directory)  # the new name is durable before anything is acked

    def _sync(self, chunk: list[bytes]) -> None:
        if not chunk or self._fd is None:
            return
        _write_all(self._fd, b"".join(chunk))
        self._fsync(self._fd)

    def _sync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # -- draining (used by SpoolDrainer) -----------------------------------------------------

    def peek(self, limit: int, max_bytes: int = 8 * 1024 * 1024) -> list[Entry]:
        """The oldest undrained records: at most `limit`, and `max_bytes` unless the first
        alone is bigger. Only fsync'd records are in the index."""
        out: list[Entry] = []
        size = 0
        for e in self._entries:
            if len(out) >= limit or (out and size + e.size > max_bytes):
                break
            out.append(e)
            size += e.size
        return out

    async def read(self, entries: Sequence[Entry]) -> list[VerifiedDelivery | None]:
        """The records at `entries`; None for one that fails its checksum."""
        return await asyncio.to_thread(self._read, entries)

    def _read(self, entries: Sequence[Entry]) -> list[VerifiedDelivery | None]:
        out: list[VerifiedDelivery | None] = []
        fds: dict[int, int] = {}
        try:
            for e in entries:
                if e.segment not in fds:
                    fds[e.segment] = os.open(segment_path(self.directory, e.segment), os.O_RDONLY)
                out.append(parse_frame(os.pread(fds[e.segment], e.size, e.offset)))
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    async def commit(self, entries: Sequence[Entry]) -> None:
        """The first `len(entries)` undrained records are replayed: move the checkpoint past
        them (durably), forget them, and delete the segments nothing needs any more."""
        if not entries:
            return
        if list(itertools.islice(self._entries, len(entries))) != list(entries):
            raise ValueError("commit must cover the oldest undrained records, in order")
        rest = len(self._entries) - len(entries)
        if rest:
            nxt = self._entries[len(entries)]
            position = (nxt.segment, nxt.offset)
        else:
            position = (entries[-1].segment, entries[-1].end)
        await asyncio.to_thread(self._write_checkpoint, position)
        for e in entries:
            self._entries.popleft()
            self._bytes -= e.size
        await self._collect()

    def _write_checkpoint(self, position: tuple[int, int]) -> None:
        tmp = self.directory / (_CHECKPOINT + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, json.dumps({"segment": position[0], "offset": position[1]}).encode())
            self._fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _CHECKPOINT)
        self._sync_dir(self.directory)

    async def _collect(self) -> None:
        async with self._io:
            if not self._entries and not self._pending and self._fd is not None:
                # Everything written is replayed: retire the open segment too; the next
                # append starts a new one.
                os.close(self._fd)
                self._fd = None
            keep_from = self._entries[0].segment if self._entries else self._next_seq
            if self._fd is not None:
                keep_from = min(keep_from, self._active)
            await asyncio.to_thread(self._drop_before, keep_from)

    def _drop_before(self, keep_from: int) -> None:
        self._unlink([s for s in _segments(self.directory) if s < keep_from])

    def _unlink(self, segments: list[int]) -> None:
        for seq in segments:
            segment_path(self.directory, seq).unlink(missing_ok=True)
        if segments:
            self._sync_dir(self.directory)

    async def quarantine(self, entry: Entry, d: VerifiedDelivery, reason: str) -> Path:
        """Keep a record PostgreSQL will not take where an operator can find it."""
        path = await asyncio.to_thread(self._quarantine, entry, d)
        metrics.SPOOL_QUARANTINED.inc()
        log.error("spooled delivery quarantined", delivery=d.guid, path=str(path), reason=reason)
        return path

    def _quarantine(self, entry: Entry, d: VerifiedDelivery) -> Path:
        qdir = self.directory / "quarantine"
        qdir.mkdir(exist_ok=True)
        path = qdir / f"{entry.segment:020d}-{entry.offset:012d}.rec"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, MAGIC + encode(d))
            self._fsync(fd)
        finally:
            os.close(fd)
        self._sync_dir(qdir)
        return path


def iter_segment(path: Path) -> Iterator[VerifiedDelivery]:
    """Every valid record of a segment or quarantine file (for tools and tests)."""
    for _, _, d in scan_segment(path).records:
        yield d
