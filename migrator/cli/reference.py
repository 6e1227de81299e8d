"""The CLI reference, generated from the click group itself so that it never drifts.

``markdown()`` walks every command of ``migrator`` (groups included, in name order) and
quotes its ``--help`` as printed at a width of 100 columns. The docs site builds its
reference page from it (``docs/hooks/generate.py``); commands added later appear with no
change here.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

WIDTH = 100


def command_paths(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group`` as (path, command): (), ("db",), ("db", "current")..."""
    yield prefix, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def help_text(root: click.Group, path: tuple[str, ...], prog: str = "migrator") -> str:
    """What ``prog PATH --help`` prints at ``WIDTH`` columns."""
    ctx = click.Context(root, info_name=prog, terminal_width=WIDTH, **root.context_settings)
    command: click.Command = root
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
        ctx = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
    return command.get_help(ctx) + "\n"


def markdown(root: click.Group | None = None) -> str:
    """The reference page: one section per command, its help in a fenced block."""
    if root is None:
        from migrator.cli.main import cli

        root = cli
    parts = [
        "# CLI reference\n",
        "Generated from the command line's own `--help` when the site is built: it is always"
        " what this version of `migrator` prints. For examples and explanations, see"
        " [Command line](cli.md).\n",
    ]
    for path, command in command_paths(root):
        title = " ".join(("migrator", *path))
        summary = command.get_short_help_str(limit=WIDTH)
        parts.append(f"## `{title}`\n\n{summary}\n\n```text\n{help_text(root, path)}```\n")
    return "\n".join(parts)
