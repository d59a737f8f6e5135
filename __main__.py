"""``python -m sagad``: the command line."""

from sagad.cli.main import app

app(prog_name="sagad")
