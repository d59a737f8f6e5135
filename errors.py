"""The errors sagad raises and routes; each says what went wrong, never how to debug it."""


class SagadError(Exception):
    """Base class of every error sagad raises on purpose."""


class ConfigError(SagadError):
    """A setting (option, environment variable, database URL) is unusable."""


class BrokenInstall(SagadError):
    """sagad's own files (its migration scripts) are missing or inconsistent."""


class InvalidBrief(SagadError):
    """A brief does not have the shape or content the pipeline accepts."""


class DatabaseError(SagadError):
    """The database refused or failed a statement."""


class TransientDatabaseError(DatabaseError):
    """A database error that is worth retrying: connection lost, serialization failure, deadlock."""


class DatabaseUnreachable(TransientDatabaseError):
    """The database refused a connection, dropped one, or did not answer in time."""


class DatabaseTimeout(TransientDatabaseError):
    """The server cancelled a statement that ran past its time limit (a lock held elsewhere, a slow server)."""


class TooManyClients(DatabaseUnreachable):
    """The server (or a pooler) refused a connection: it has as many as it allows."""


class PoolerRefused(TransientDatabaseError):
    """A pooler in front of the server refused a session feature (a setting at connect, a prepared statement)."""


class WorkerIdInUse(SagadError):
    """A live daemon already runs under this worker id."""


class PermanentDatabaseError(DatabaseError):
    """A database error that a retry would repeat: a constraint, a type, a missing table."""


class SchemaNotReady(DatabaseError):
    """The database has not been migrated to the schema this sagad needs."""


class StepFailed(SagadError):
    """A step decided the run cannot go on (a business failure, a 4xx); the run is compensated."""


class TransientStepError(SagadError):
    """A step's call failed for a while (a timeout, 429, 5xx): it is retried, then fails the run for good."""


class RunNotFound(SagadError):
    """No run has this id."""


class InvalidRequest(SagadError):
    """An argument to the client or an operator command is malformed (a run id, a filter, a cursor)."""


class WaitTimedOut(SagadError):
    """A run did not reach a terminal state within the time a caller was willing to wait."""
