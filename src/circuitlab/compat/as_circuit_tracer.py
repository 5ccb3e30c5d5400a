"""``import circuitlab.compat.as_circuit_tracer``: the same as ``circuitlab.compat.install()``."""

from circuitlab.compat import install

install()
