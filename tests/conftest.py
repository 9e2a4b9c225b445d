"""The one top-level conftest: registers the test kits (tests/kit/), whose
fixtures every suite (integration, security, browser) can use, and the
KNOWN_BUGS convention. pytest.ini (repo root) makes this the top-level conftest
and puts tests/ on the import path."""

import pytest

pytest_plugins = [
    "kit.isolate",   # sb, test_user, session_dir, isolate_bin
    "kit.kernel",    # ik_session, khost
    "kit.cli",       # tools, jup
    "kit.browser",   # lab_app
    "kit.security",  # sec, runner, kernel_pool
    "kit.cgroup",    # cgroup_takeover, delegated_cgroup
]


def pytest_configure(config):
    config.addinivalue_line("markers", "cold_only(reason): the test starts no kernel through a kernelspec, so it "
                                       "has no pooled run (kit/kernel.py khost, kit/security.py runner)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """item.rep_call: the call phase's report, so a fixture checks after a passed test only."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


def _pooled(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(v, str) and ("pooled" in v.split("-")) for v in params.values())


def pytest_collection_modifyitems(config, items):
    """Pooled runs of @cold_only tests are dropped. Known weaknesses: a test
    module lists them in KNOWN_BUGS as {test function name: (runner ids or "*",
    "BUG: ...")}; those runs are strict xfails, so the suite turns red as soon
    as a fix lands (and the entry must then be removed) or the failure changes
    into a pass. Runner ids: the security `runner` (isolate-root, kernel-user,
    pooled-root, ...) or the kernel fixtures' (root, user-pooled, ...)."""
    dropped = [i for i in items if i.get_closest_marker("cold_only") and _pooled(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]
    for item in items:
        bugs = getattr(item.module, "KNOWN_BUGS", {})
        spec = bugs.get(item.originalname) if hasattr(item, "originalname") else None
        if not spec:
            continue
        runners, reason = spec
        params = getattr(getattr(item, "callspec", None), "params", {})
        rid = params.get("runner") or params.get("hk") or params.get("khost")
        if runners == "*" or rid in runners:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
