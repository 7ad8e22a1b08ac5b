"""The run store: fsspec URIs (a folder or ``s3://``), atomic writes, JSONL and manifests (written last; their
files checked before a stage is reused: `integrity`), model
folders copied between an ``s3://`` store and the local cache, sharded stages that resume after a crash, secret
redaction for everything written or logged, and the code digests that stage keys are built on.

May import the top-level modules (`metareward.records`; `metareward.hardware`: the local model cache) and no
other subpackage: nothing that computes.
"""
