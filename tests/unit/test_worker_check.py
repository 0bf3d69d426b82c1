"""The canary check and the workers it targets agree on node names, and compose runs the check.

The check itself runs against real workers and Redis in tests/integration/test_canary.py.
"""

from __future__ import annotations

from typing import Any

import yaml
from celery.utils.nodenames import host_format

from tests.unit.test_deploy_files import COMPOSE_FILE, argv, cli_problems
from workers.canary import default_node
from workers.celery_app import worker_argv


def test_default_node_is_the_name_a_default_worker_takes() -> None:
    """`worker-check` without --node targets exactly the node `speechbatch worker` names itself."""
    hostname = next(a for a in worker_argv(4) if a.startswith("--hostname="))
    assert host_format(hostname.removeprefix("--hostname=")) == default_node()


def test_worker_name_reaches_celery() -> None:
    """`speechbatch worker --name` becomes Celery's node name (the canary's queue is named so)."""
    assert "--hostname=w1@%h" in worker_argv(4, "w1@%h")


def test_compose_worker_healthcheck_is_the_canary_check() -> None:
    """The worker container is healthy only if a canary runs on it: a valid `worker-check` call."""
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    check = services["worker"]["healthcheck"]
    test = argv(check["test"])
    assert test[:3] == ["CMD", "speechbatch", "worker-check"]
    assert "--node" not in test  # the container's own worker, celery@<container hostname>
    assert cli_problems(test[2:]) == []
    timeout = float(test[test.index("--timeout") + 1])
    assert timeout < int(check["timeout"].removesuffix("s")), "Docker would kill the check first"
