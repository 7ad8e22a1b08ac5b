"""Real servers for the integration tests: moto_server (S3 API), `prefect server start`, a `prefect worker`.

Every process is started here with its own PREFECT_HOME and stopped by its PID in a finalizer, also when a test
fails. Logs go to files under the test's temporary folder (the secret-grep test reads them).
"""

from __future__ import annotations

import pytest

from servers import BIN, Stack, api, free_port, wait_until  # noqa: F401 - tests/ is on sys.path (tests/conftest.py)

# A transient failure injected into the worker's processes: the first call of the named stage function raises,
# the next one runs (the marker file remembers). Loaded through PYTHONPATH as sitecustomize, only in the worker.
SITECUSTOMIZE = '''
import os
_spec = os.environ.get("METAREWARD_TEST_FAIL_ONCE")
if _spec:
    import metareward.pipeline.stages as _stages
    _stage, _marker = _spec.split(":", 1)
    _orig = getattr(_stages, _stage)

    def _fail_once(*args, **kwargs):
        if not os.path.exists(_marker):
            with open(_marker, "w") as f:
                f.write(str(os.getpid()))
            raise ConnectionError(f"injected transient error in {_stage}")
        return _orig(*args, **kwargs)

    setattr(_stages, _stage, _fail_once)
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    """moto_server + prefect server (+ pools, deployments, a worker) on 127.0.0.1; all stopped by PID at the end."""
    from metareward.engines.models import EMBEDDED_NAME, embedded_model_path

    tmp = tmp_path_factory.mktemp("stack")
    s = Stack(tmp)
    request.addfinalizer(s.stop)
    (tmp / "cache" / "models").mkdir(parents=True)  # the converted embedded model, shared read-only (no 30 s conversion)
    (tmp / "cache" / "models" / EMBEDDED_NAME).symlink_to(embedded_model_path())

    s.start_store_and_api()

    s.bucket = "metareward-it"
    import fsspec

    s.fs = fsspec.filesystem("s3", key="metareward-it", secret=s.secret, endpoint_url=s.endpoint,
                             skip_instance_cache=True)
    s.fs.mkdir(s.bucket)
    s.deploy_all()

    inject = tmp / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    s.fail_marker = tmp / "judge-failed-once"
    s.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "local", "--type", "process"],
            {"PYTHONPATH": str(inject), "METAREWARD_TEST_FAIL_ONCE": f"judge:{s.fail_marker}"})
    return s
