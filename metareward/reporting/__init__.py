"""What a run shows: the run as tables (`tables`), the report written into ``<run>/report/`` (`report`: HTML and
Markdown) with the paper's figures (`plots`, matplotlib imported lazily), the per-iteration summary (`summary`)
and the CLI's progress bars (`console`).

Reads the run store only: may import `metareward.runstore`, `metareward.records` and `metareward.progress`; no
engine, no stage, no Prefect.
"""
