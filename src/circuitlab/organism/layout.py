"""Names of an organism directory's parts (shared by ``recipe`` and ``load``)."""

MODEL_DIR = "model"  # safetensors weights + tokenizer
TRANSCODERS_DIR = "transcoders"  # circuit-tracer's layout
FEATURES_DIR = "features"  # dashboard store
INFO_FILE = "organism.json"  # recipe, timings, accuracy, state features
