"""sagad: a saga pipeline daemon on PostgreSQL.

The repository root is this package: ``actors/`` is ``sagad.actors``, ``supervisor.py`` is
``sagad.supervisor``, and so on (see ``[tool.setuptools.package-dir]`` in ``pyproject.toml``).
"""
