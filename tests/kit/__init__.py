"""The test kits: one module per program the tests drive, on one shared base.

    common.py    constants (REPO, PYTHON, TEST_USER, SAFE_PATH, SETPRIV), the test
                 user, setpriv, the base environment, the host process scan,
                 wait_until / wait_for (no pytest: client scripts import it too)
    isolate.py   `isolate`: the `sb` fixture (Sandbox), `test_user`, `isolate_bin`
    kernel.py    isolated-kernel-launcher under real Jupyter clients: `ik_session`,
                 `khost` and the client-side scenario helpers
    cli.py       `isolated-kernel` (the management program): `tools`, `jup`
    browser.py   Jupyter web servers and headless Chromium (uses cli.py)
    security.py  the adversarial harness: `sec`, `runner`, `kernel_pool`
    cgroup.py    cgroup v2 fixtures: `cgroup_takeover`, `delegated_cgroup`
    exec_client.py, kdriver.py   client scripts the kits run as the test user

tests/conftest.py registers the fixture kits (pytest_plugins); pytest.ini puts
tests/ on the import path, so a test module writes `from kit.isolate import ...`.
"""
