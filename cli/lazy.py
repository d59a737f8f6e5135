"""Commands whose modules load only when they run: ``sagad --help`` and ``sagad submit`` skip the daemon's imports."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import typer

# typer 0.29 carries its own click: its commands and contexts are of that one's classes.
from typer import _click as click
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A command defined by ``module``'s ``function``, with the help line ``sagad --help`` shows."""

    module: str
    function: str
    help: str

    def load(self, name: str) -> click.Command:
        app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        app.command(name, help=self.help)(getattr(import_module(self.module), self.function))
        command = typer.main.get_command(app)
        command.name = name
        return command


LAZY: dict[str, LazyCommand] = {
    "run": LazyCommand(
        "sagad.cli.daemon", "daemon_command", "Run the daemon in the foreground until SIGTERM or SIGINT."
    ),
    "demo": LazyCommand(
        "sagad.cli.demo", "demo_command", "Push the example briefs through a daemon and print each outcome."
    ),
    "audit": LazyCommand(
        "sagad.cli.audit", "audit_command", "Check the invariants: exit 0 when clean, 1 with a report otherwise."
    ),
    "loadtest": LazyCommand(
        "sagad.cli.loadtest",
        "loadtest_command",
        "Drive daemons with a known mix of briefs; report throughput, latency, audit.",
    ),
}


class LazyGroup(TyperGroup):
    """Lists the lazy commands with their help line; imports one only to run it (or show its own help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = LAZY.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        # Listed in `sagad --help`: a stand-in with the help line, never run (resolve_command loads the real one).
        return TyperCommand(cmd_name, help=lazy.help, short_help=lazy.help)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        lazy = LAZY.get(args[0]) if args else None
        if lazy is not None:
            return args[0], lazy.load(args[0]), args[1:]
        return super().resolve_command(ctx, args)
