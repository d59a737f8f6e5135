"""A log of every write to a run, made by triggers in the test's own database, naming the writer.

Daemons connect with ``application_name`` set to their worker id (``fleet.as_writer``), so the log
shows which daemon claimed, advanced, compensated or released a run, and which inserted or deleted
each business row. Fencing then reads as one query: every write was made by the run's latest claimer.
A reaper making a dead daemon's run claimable (``free``) writes nothing of the run, and is not a write.
"""

from __future__ import annotations

from sagad.store.db import Database
from tests.helpers import TABLES

_SETUP = """
CREATE TABLE chaos_writes (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL,
    writer text NOT NULL,
    kind text NOT NULL,
    token bigint,
    next_step smallint
);
CREATE INDEX ON chaos_writes (run_id, id);

CREATE FUNCTION chaos_log_run_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_writes (run_id, writer, kind, token, next_step) VALUES (
        NEW.id, current_setting('application_name'),
        CASE WHEN NEW.lease_token > OLD.lease_token THEN 'claim'
             -- a reaper freeing the lease of a dead holder: nothing of the run itself changes
             WHEN NEW.available_at < OLD.available_at AND NEW.claimed_by IS NOT DISTINCT FROM OLD.claimed_by
                  AND NEW.status = OLD.status AND NEW.next_step = OLD.next_step THEN 'free'
             ELSE 'run:' || NEW.status END,
        NEW.lease_token, NEW.next_step);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_log_run_write AFTER UPDATE ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION chaos_log_run_write();

CREATE FUNCTION chaos_log_row_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_writes (run_id, writer, kind) VALUES (
        CASE WHEN TG_OP = 'DELETE' THEN OLD.run_id ELSE NEW.run_id END,
        current_setting('application_name'), lower(TG_OP) || ':' || TG_TABLE_NAME);
    RETURN NULL;
END $$;
"""

_ROW_TRIGGER = """
CREATE TRIGGER chaos_log_row_write AFTER INSERT OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION chaos_log_row_write();
"""

_WRITES_BY_OTHERS = """
WITH writes AS (
    SELECT w.id, w.run_id, w.writer, w.kind,
           (SELECT c.writer FROM chaos_writes c
            WHERE c.run_id = w.run_id AND c.kind = 'claim' AND c.id < w.id
            ORDER BY c.id DESC LIMIT 1) AS holder
    FROM chaos_writes w WHERE w.kind NOT IN ('claim', 'free')
)
SELECT run_id, writer, kind, holder FROM writes WHERE holder IS DISTINCT FROM writer ORDER BY id
"""


async def install_write_log(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute(_SETUP)
        for table in TABLES:
            await conn.execute(_ROW_TRIGGER.format(table=table))


async def writes_not_by_holder(db: Database) -> list[str]:
    """Writes to a run by anyone but the daemon that claimed it last: a broken fence, each one."""
    rows = await db.fetch(_WRITES_BY_OTHERS)
    return [f"{r['kind']} on run {r['run_id']} by {r['writer']!r} while {r['holder']!r} held it" for r in rows]


async def count_writes(db: Database, kind_prefix: str = "") -> int:
    rows = await db.fetch("SELECT count(*) FROM chaos_writes WHERE kind LIKE $1 || '%'", kind_prefix)
    return int(rows[0][0])


async def count_frees(db: Database, of_writer: str) -> int:
    """Leases of ``of_writer`` (then holding the run) made claimable by a reaper: it was taken for dead."""
    rows = await db.fetch(
        "SELECT count(*) FROM chaos_writes f WHERE f.kind = 'free' AND (SELECT c.writer FROM chaos_writes c"
        " WHERE c.run_id = f.run_id AND c.kind = 'claim' AND c.id < f.id ORDER BY c.id DESC LIMIT 1) = $1",
        of_writer,
    )
    return int(rows[0][0])


async def count_self_reclaims(db: Database) -> int:
    """Claims of a run by the daemon that had claimed it last: it had lost track of a run it still held."""
    rows = await db.fetch(
        "SELECT count(*) FROM (SELECT writer, lag(writer) OVER (PARTITION BY run_id ORDER BY id) AS previous"
        " FROM chaos_writes WHERE kind = 'claim') AS claims WHERE previous = writer"
    )
    return int(rows[0][0])
