"""metareward: Meta-Rewarding (Wu et al. 2024) as a library, Prefect tasks and flows.

The package root imports nothing heavy: no prefect, torch, transformers or vllm at import time.
"""

__version__ = "0.1.0"
