"""Thin Prefect tasks, one per stage: they call `metareward.stages` and return small Manifests."""
