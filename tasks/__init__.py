"""Thin Prefect tasks, one per stage: they call `metareward.pipeline.stages` and return small Manifests."""
