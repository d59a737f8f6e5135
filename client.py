"""``sagad.Client``: submit, read, wait for, list, cancel and retry runs from code.

The operator commands (``sagad runs ...``, ``sagad intake ...``) are thin layers over it. A client
opens at most two connections: one for its statements, and one that listens for runs that end
(where the database allows LISTEN; otherwise ``wait`` polls).
"""

from __future__ import annotations

import builtins
import getpass
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from sagad.domain.operations import CancelResult, HistoryEvent, IntakeState, RetryResult, Run, RunFilter, RunPage
from sagad.domain.runs import RunId
from sagad.errors import InvalidBrief, InvalidRequest, RunNotFound, WaitTimedOut
from sagad.store.db import Database
from sagad.store.operations import OperationsStore
from sagad.store.runs import RunStore
from sagad.store.version import ensure_migrated
from sagad.store.watch import FinishWatcher

Brief = Mapping[str, Any] | str | bytes
"""A brief as a JSON object, or its JSON text (str or UTF-8 bytes)."""

MAX_PAGE = 1000
"""The most runs one ``list`` page (and one statement of a bulk cancel, retry or resume) holds."""
MAX_REASON = 500
_RECHECK_SECONDS = 5.0
"""While listening, a wait still reads its run this often: a notification lost with a connection costs no more."""
_POLL_FIRST, _POLL_MOST = 0.05, 1.0

T = TypeVar("T")


def validated_brief(brief: Brief) -> Any:
    """The brief's JSON value, checked exactly as ``sagad submit`` checks a file; InvalidBrief otherwise."""
    # Imported here: listing or cancelling runs needs no brief model (pydantic).
    from sagad.content.brief import MAX_BRIEF_BYTES, parse_brief  # noqa: PLC0415

    if isinstance(brief, bytes):
        data = brief
    elif isinstance(brief, str):
        data = brief.encode("utf-8", "surrogatepass")
    elif isinstance(brief, Mapping):
        try:
            data = json.dumps(brief, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError) as error:
            raise InvalidBrief(f"brief is not JSON: {error}") from None
    else:
        raise InvalidBrief(f"brief must be a JSON object, its text or its bytes, not {type(brief).__name__}")
    if len(data) > MAX_BRIEF_BYTES:
        raise InvalidBrief(f"brief is over the {MAX_BRIEF_BYTES}-byte limit")
    _, raw = parse_brief(data)
    return raw


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= 200 and key.isprintable()):
        raise InvalidRequest("idempotency key must be 1 to 200 printable characters")


def run_id_of(value: RunId | uuid.UUID | str) -> RunId:
    """A run id from a UUID or its text; InvalidRequest naming the value otherwise."""
    if isinstance(value, uuid.UUID):
        return RunId(value)
    try:
        return RunId(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidRequest(f"not a run id (a UUID): {str(value)[:80]!r}") from None


def _check_text(name: str, value: str | None, longest: int) -> None:
    if value is not None and not (0 < len(value) <= longest and value.isprintable()):
        raise InvalidRequest(f"{name} must be 1 to {longest} printable characters")


def operator() -> str:
    """Who is asking, for the record: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _canceller(reason: str, by: str | None) -> str:
    """Who cancels (``by``, or this user@host), once the reason and the name are checked."""
    _check_text("reason", reason, MAX_REASON)
    by = by or operator()
    _check_text("by", by, 200)
    return by


def _unique(run_ids: Iterable[RunId | uuid.UUID | str]) -> list[RunId]:
    return list(dict.fromkeys(run_id_of(run_id) for run_id in run_ids))


class Client:
    """Drives runs from code. Use as ``async with Client(url) as client: ...``."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._db: Database | None = None
        self._watcher: FinishWatcher | None = None
        self._watcher_opened = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the statement connection and check that the database is migrated to this sagad's schema."""
        db = await Database.connect(self._url, max_size=1, min_size=1)
        try:
            await ensure_migrated(db)
        except BaseException:
            with anyio.move_on_after(5, shield=True):
                await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        db, self._db = self._db, None
        with anyio.move_on_after(5, shield=True):
            if watcher is not None:
                await watcher.close()
            if db is not None:
                await db.close()

    @property
    def _database(self) -> Database:
        if self._db is None:
            raise InvalidRequest("the client is not connected: use `async with Client(url) as client`")
        return self._db

    async def submit(self, brief: Brief, idempotency_key: str | None = None) -> RunId:
        """Store a new run for ``brief``; the same idempotency key again returns the first run."""
        [run_id] = await self.submit_many([(brief, idempotency_key)])
        return run_id

    async def submit_many(self, briefs: Sequence[Brief | tuple[Brief, str | None]]) -> list[RunId]:
        """Store a run for each brief in one statement; every brief is checked before any is stored."""
        pairs: list[tuple[Any, str | None]] = []
        for index, item in enumerate(briefs):
            brief, key = item if isinstance(item, tuple) else (item, None)
            try:
                check_idempotency_key(key)
                pairs.append((validated_brief(brief), key))
            except (InvalidBrief, InvalidRequest) as error:
                if len(briefs) == 1:
                    raise
                raise type(error)(f"brief {index}: {error}") from None
        if not pairs:
            return []
        results = await RunStore(self._database).submit_many(pairs)
        return [run_id for run_id, _ in results]

    async def get(self, run_id: RunId | uuid.UUID | str) -> Run:
        """The run as it is now; RunNotFound if no run has this id."""
        parsed = run_id_of(run_id)
        run = await OperationsStore(self._database).show(parsed)
        if run is None:
            raise RunNotFound(f"no run {parsed}")
        return run

    async def history(self, run_id: RunId | uuid.UUID | str, *, limit: int = 1000) -> builtins.list[HistoryEvent]:
        """What happened to the run, oldest first: claims, step commits (with their calls), failure, undos,
        rows deleted, cancel, end, retry."""
        run = await self.get(run_id)
        return await OperationsStore(self._database).history(run.run_id, limit)

    async def prune_history(self, older_than: timedelta, *, page: int = 10_000) -> int:
        """Delete the history of runs submitted more than ``older_than`` ago, a page per transaction."""
        if older_than.total_seconds() <= 0:
            raise InvalidRequest("older_than must be positive")
        before = datetime.now(UTC) - older_than
        store, total = OperationsStore(self._database), 0
        while True:
            deleted = await store.prune_history(before, page)
            total += deleted
            if deleted < page:
                return total

    # The timeout is part of the contract (a caller without a cancel scope of its own: the sync facade).
    async def wait(self, run_id: RunId | uuid.UUID | str, timeout: float) -> Run:  # noqa: ASYNC109
        """The run once it has ended (completed or compensated); WaitTimedOut after ``timeout`` seconds.

        Woken by the database when the run ends (LISTEN), else polling from 50 ms up to one second.
        """
        if not timeout >= 0:
            raise InvalidRequest(f"timeout must be 0 or more seconds, not {timeout}")
        parsed = run_id_of(run_id)
        watcher = await self._finish_watcher()
        deadline = anyio.current_time() + timeout
        delay = _POLL_FIRST
        while True:
            event = watcher.subscribe(parsed) if watcher.listening else None
            try:
                run = await self.get(parsed)
                if run.is_terminal:
                    return run
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    raise WaitTimedOut(f"run {parsed} is still {run.status.value} after {timeout:g} s")
                if event is not None:
                    with anyio.move_on_after(min(remaining, _RECHECK_SECONDS)):
                        await event.wait()
                else:
                    await anyio.sleep(min(delay, remaining))
                    delay = min(delay * 2, _POLL_MOST)
            finally:
                if event is not None:
                    watcher.unsubscribe(parsed, event)

    async def _finish_watcher(self) -> FinishWatcher:
        if self._watcher is None:
            self._watcher = FinishWatcher(self._database)
        if not self._watcher_opened:
            self._watcher_opened = True
            await self._watcher.open()
        return self._watcher

    async def list(self, where: RunFilter | None = None, *, limit: int = 50, cursor: str | None = None) -> RunPage:
        """Runs matching ``where``, newest first, ``limit`` at most; pass ``next_cursor`` on for the next page."""
        if not 0 < limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be 1 to {MAX_PAGE}, not {limit}")
        where = where or RunFilter()
        _check_filter(where)
        after = None
        if cursor is not None:
            try:
                after = RunId(uuid.UUID(cursor))
            except ValueError:
                raise InvalidRequest(f"not a cursor from a previous page: {cursor[:80]!r}") from None
        runs = await OperationsStore(self._database).list_runs(where, cursor=after, limit=limit)
        last = str(runs[-1].run_id) if len(runs) == limit else None
        return RunPage(tuple(runs), last)

    async def count(self, where: RunFilter | None = None) -> int:
        """How many runs match ``where`` (reads them all: mind the filter on a big table)."""
        where = where or RunFilter()
        _check_filter(where)
        return await OperationsStore(self._database).count(where)

    async def pages(self, where: RunFilter, *, page: int = MAX_PAGE) -> AsyncIterator[builtins.list[Run]]:
        """Every run matching ``where``, a page at a time, newest first (for the bulk forms)."""
        cursor = None
        while True:
            found = await self.list(where, limit=page, cursor=cursor)
            if found.runs:
                yield list(found.runs)
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    async def cancel(
        self, run_ids: Iterable[RunId | uuid.UUID | str], reason: str, *, by: str | None = None
    ) -> builtins.list[CancelResult]:
        """Cancel runs: a pending one is compensated at once, one in flight is sent backward by its daemon.

        Every id must name a run (RunNotFound otherwise, and nothing is changed). A completed run is
        refused, a compensated or compensating one left as it is: each result says which.
        """
        by = _canceller(reason, by)
        ids = _unique(run_ids)
        await self._all_exist(ids)
        store = OperationsStore(self._database)
        results: builtins.list[CancelResult] = []
        for start in range(0, len(ids), MAX_PAGE):
            results += await store.cancel(ids[start : start + MAX_PAGE], reason, by)
        return results

    async def cancel_where(
        self, where: RunFilter, reason: str, *, by: str | None = None, page: int = MAX_PAGE
    ) -> AsyncIterator[builtins.list[CancelResult]]:
        """Cancel every run ``where`` matches, a page at a time (newest first), each page chosen and
        cancelled in one statement; yields what became of each page's runs.

        A run whose row another transaction holds (its step committing, say) is passed over, then
        cancelled after the last page, waiting for it: it holds up no page.
        """
        if not 0 < page <= MAX_PAGE:
            raise InvalidRequest(f"page must be 1 to {MAX_PAGE}, not {page}")
        _check_filter(where)
        by = _canceller(reason, by)
        store = OperationsStore(self._database)
        cursor: RunId | None = None
        held: builtins.list[RunId] = []
        while True:
            done = await store.cancel_page(where, cursor=cursor, limit=page, reason=reason, by=by)
            if done.results:
                yield done.results
            held += done.held
            if (cursor := done.next_cursor) is None:
                break
        for start in range(0, len(held), page):
            yield await store.cancel(held[start : start + page], reason, by)

    async def retry(self, run_ids: Iterable[RunId | uuid.UUID | str]) -> builtins.list[RetryResult]:
        """Submit each compensated run's brief again as a new run linked to it; a run retried before gives its retry."""
        ids = _unique(run_ids)
        await self._all_exist(ids)
        store = OperationsStore(self._database)
        results: builtins.list[RetryResult] = []
        for start in range(0, len(ids), MAX_PAGE):
            results += await store.retry(ids[start : start + MAX_PAGE])
        return results

    async def resume(self, run_ids: Iterable[RunId | uuid.UUID | str]) -> set[RunId]:
        """Of these runs waiting on a failed undo, the ones any daemon now tries again at once."""
        ids = _unique(run_ids)
        await self._all_exist(ids)
        store = OperationsStore(self._database)
        resumed: set[RunId] = set()
        for start in range(0, len(ids), MAX_PAGE):
            resumed |= await store.resume(ids[start : start + MAX_PAGE])
        return resumed

    async def intake(self) -> IntakeState:
        """Whether the fleet claims new runs."""
        return await OperationsStore(self._database).intake()

    async def pause_intake(self, reason: str | None = None, *, by: str | None = None) -> IntakeState:
        """Every daemon stops claiming new runs at its next claim; runs in flight finish, submissions wait."""
        _check_text("reason", reason, MAX_REASON)
        return await OperationsStore(self._database).set_intake(True, by or operator(), reason)

    async def resume_intake(self, *, by: str | None = None) -> IntakeState:
        """Every daemon claims new runs again at its next claim."""
        return await OperationsStore(self._database).set_intake(False, by or operator(), None)

    async def _all_exist(self, ids: Sequence[RunId]) -> None:
        missing: builtins.list[RunId] = []
        store = OperationsStore(self._database)
        for start in range(0, len(ids), MAX_PAGE):
            missing += await store.missing(ids[start : start + MAX_PAGE])
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise RunNotFound("no run " + ", ".join(str(run_id) for run_id in missing[:3]) + more)


def _check_filter(where: RunFilter) -> None:
    _check_text("error text", where.error_contains, 200)
    if where.since is not None and where.since.tzinfo is None:
        raise InvalidRequest("since must carry a time zone")
    if where.until is not None and where.until.tzinfo is None:
        raise InvalidRequest("until must carry a time zone")
    if where.since is not None and where.until is not None and where.since >= where.until:
        raise InvalidRequest("since must come before until")


class SyncClient(AbstractContextManager["SyncClient"]):
    """``Client`` for scripts without an event loop: ``with SyncClient(url) as client: client.submit(...)``."""

    def __init__(self, database_url: str) -> None:
        self._client = Client(database_url)
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None

    def __enter__(self) -> SyncClient:
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._portal.call(self._client.connect)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._portal is not None and self._portal_cm is not None:
            try:
                self._portal.call(self._client.close)
            finally:
                self._portal_cm.__exit__(kind, error, trace)
                self._portal = self._portal_cm = None

    def _call(self, function: Callable[[], Awaitable[T]]) -> T:
        if self._portal is None:
            raise InvalidRequest("the client is not open: use `with SyncClient(url) as client`")
        return self._portal.call(function)

    def submit(self, brief: Brief, idempotency_key: str | None = None) -> RunId:
        return self._call(lambda: self._client.submit(brief, idempotency_key))

    def submit_many(self, briefs: Sequence[Brief | tuple[Brief, str | None]]) -> list[RunId]:
        return self._call(lambda: self._client.submit_many(briefs))

    def get(self, run_id: RunId | uuid.UUID | str) -> Run:
        return self._call(lambda: self._client.get(run_id))

    def wait(self, run_id: RunId | uuid.UUID | str, timeout: float) -> Run:
        return self._call(lambda: self._client.wait(run_id, timeout))

    def list(self, where: RunFilter | None = None, *, limit: int = 50, cursor: str | None = None) -> RunPage:
        return self._call(lambda: self._client.list(where, limit=limit, cursor=cursor))

    def cancel(self, run_ids: Iterable[RunId | uuid.UUID | str], reason: str) -> builtins.list[CancelResult]:
        return self._call(lambda: self._client.cancel(run_ids, reason))

    def cancel_where(self, where: RunFilter, reason: str, *, page: int = MAX_PAGE) -> builtins.list[CancelResult]:
        """Every page's results at once: what became of each run ``where`` matched."""

        async def every_page() -> builtins.list[CancelResult]:
            return [result async for done in self._client.cancel_where(where, reason, page=page) for result in done]

        return self._call(every_page)

    def retry(self, run_ids: Iterable[RunId | uuid.UUID | str]) -> builtins.list[RetryResult]:
        return self._call(lambda: self._client.retry(run_ids))
