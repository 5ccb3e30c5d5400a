"""``circuitlab start-server``: circuit-tracer's name for ``circuitlab serve``."""

from __future__ import annotations

import argparse

from . import cmd_serve

NAME = "start-server"
HELP = "circuit-tracer's name for `serve`: the web lab over a folder of graph files"
DESCRIPTION = """circuit-tracer's `start-server` command: the same as `circuitlab serve`, with
its flags (--graph_file_dir, --port 8041, and every flag of `serve`). Unlike circuit-tracer's
server, the lab binds to 127.0.0.1 unless --host says otherwise (docs/security.md)."""
EXAMPLES = """examples:
  circuitlab start-server --graph_file_dir ./graphs
  circuitlab start-server --graph_file_dir ./graphs --port 8042
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    cmd_serve.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    return cmd_serve.run(args)
