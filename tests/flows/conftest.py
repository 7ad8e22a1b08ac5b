import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (about 14 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fake_trainer(monkeypatch):
    """Stand-in for TRL: writes a tiny 'model' folder whose content depends on the pairs and beta."""
    import json
    from pathlib import Path

    import metareward.training.dpo

    calls = []

    def train_dpo(pairs, model_path, output_dir, dpo, **kw):
        calls.append((len(pairs), model_path, dpo.beta))
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "config.json").write_text(json.dumps({"beta": dpo.beta, "pairs": len(pairs),
                                                               "parent": model_path}))
        return {"steps": 1, "train_loss": 0.69, "n_pairs": len(pairs), "log_history": [{"loss": 0.69}]}

    monkeypatch.setattr(metareward.training.dpo, "train_dpo", train_dpo)
    return calls
