"""Prefect flows: one Meta-Rewarding iteration as a DAG, and the loop over iterations."""
