"""circuitlab: circuit tracing for language models."""
