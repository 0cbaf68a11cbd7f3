"""pytest plugin of rigctl's verify suites, loaded with -p by provisioner.verify.runner.

Each test function ``test_<kind>(check, ...)`` is parametrised with the checks of
that kind from the expectations file (``--rigctl-expectations``). Results go to
``--rigctl-results`` as JSON: check id, outcome, message and the data a test
recorded, which the parent turns into located diagnostics.
"""

import json

import pytest
import testinfra

from provisioner.verify.inventory import InventoryHost
from provisioner.verify.ssh import SshSession
from provisioner.verify.suites import Failure


def pytest_addoption(parser):
    parser.addoption("--rigctl-expectations", required=True, help="expectations JSON written by rigctl verify")
    parser.addoption("--rigctl-results", required=True, help="where to write the results JSON")


def _expectations(config):
    if not hasattr(config, "_rigctl_expectations"):
        with open(config.getoption("--rigctl-expectations"), encoding="utf-8") as f:
            config._rigctl_expectations = json.load(f)
        config._rigctl_results = []
    return config._rigctl_expectations


def pytest_generate_tests(metafunc):
    if "check" not in metafunc.fixturenames:
        return
    kind = metafunc.function.__name__[len("test_"):]
    checks = [c for c in _expectations(metafunc.config)["checks"] if c["kind"] == kind]
    metafunc.parametrize("check", checks, ids=[c["label"] for c in checks])


@pytest.fixture(scope="session")
def expectations(request):
    return _expectations(request.config)


@pytest.fixture(scope="session")
def state():
    """Shared across tests: host reachability, unit states (the endpoint test reads them)."""
    return {"reach": {}, "active": {}}


@pytest.fixture(scope="session")
def ssh(expectations):
    hosts = [InventoryHost(name, name, python=h["python"]) for name, h in expectations["hosts"].items()]
    return SshSession(hosts, config=expectations["ssh_config"])


@pytest.fixture
def record(request):
    """Dict a test fills with data for the parent (facts, timings)."""
    request.node.rigctl_data = {}
    return request.node.rigctl_data


def _host(expectations, name):
    return testinfra.get_host(f"ssh://{name}", ssh_config=expectations["ssh_config"])


@pytest.fixture
def infra(check, expectations):
    return _host(expectations, check["host"])


@pytest.fixture
def remote(check, expectations, state):
    """The testinfra host of this check; skipped when test_reachable found it unreachable."""
    if state["reach"].get(check["host"]) is False:
        pytest.skip(f"{check['host']} is unreachable")
    return _host(expectations, check["host"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    check = item.callspec.params.get("check") if hasattr(item, "callspec") else None
    if not isinstance(check, dict) or (rep.when != "call" and rep.passed):  # not a check, or empty set
        return
    entry = {"id": check["id"], "when": rep.when, "outcome": rep.outcome,
             "data": getattr(item, "rigctl_data", {}), "seconds": round(rep.duration, 3)}
    if rep.failed:
        exc = call.excinfo.value if call.excinfo else None
        if isinstance(exc, Failure):
            entry["message"], entry["hint"] = str(exc), exc.hint
        else:  # a bug in a suite or an unexpected remote answer: keep the traceback's end
            entry["outcome"] = "error"
            entry["message"] = "\n".join(rep.longreprtext.splitlines()[-15:])
    item.config._rigctl_results.append(entry)


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "_rigctl_results"):
        with open(config.getoption("--rigctl-results"), "w", encoding="utf-8") as f:
            json.dump(config._rigctl_results, f, indent=1)
