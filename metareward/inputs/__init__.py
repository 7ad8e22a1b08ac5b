"""What goes into a run: prompt files and datasets (sources, cleaning, held-out split, per-iteration sampling),
near-duplicate removal, benchmark decontamination, the generated prompt pool's k-shot requests, the EFT data
from ranked replies, and the JSONL reader they share.

May import `metareward.records`, `metareward.config` and `metareward.method` (the judge prompt EFT examples use);
no store, no engine, no torch at module level.
"""
