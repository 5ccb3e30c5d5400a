"""The local web lab: a FastAPI server for graph files, feature files, annotations and tracing.

``circuitlab serve`` runs it from the command line; ``serve`` / ``start_server`` from Python;
``show(graph)`` inline in a notebook. See docs/web-lab.md.
"""

from circuitlab.server.app import create_app
from circuitlab.server.heads import HeadsLab
from circuitlab.server.jobs import Job, JobCancelled, Progress, Tracer
from circuitlab.server.notebook import LabFrame, show
from circuitlab.server.running import LabServer, build_app, serve, start_server

__all__ = [
    "HeadsLab",
    "Job",
    "JobCancelled",
    "LabFrame",
    "LabServer",
    "Progress",
    "Tracer",
    "build_app",
    "create_app",
    "serve",
    "show",
    "start_server",
]
