"""Test-wide settings: no network, no telemetry, Prefect state in a temporary folder."""

import os
import tempfile

# Before anything imports prefect or huggingface_hub.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="metareward-prefect-"))
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[key] = value
