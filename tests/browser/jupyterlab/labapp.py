"""The JupyterLab test application's server: jupyterlab_server's LabServerApp
(Debian's python3-jupyterlab-server) on jupyter_server (python3-jupyter-server),
serving the webpack build in build/ at /lab.

    /usr/bin/python3 labapp.py --ServerApp.port=8888 --ServerApp.token=... \
        --IsolatedLab.user_settings_dir=DIR --IsolatedLab.workspaces_dir=DIR

Kernelspecs come from the usual Jupyter paths (JUPYTER_PATH first). Settings
and workspaces default to directories under JUPYTER_DATA_DIR, so the build
directory is only read, never written (it may belong to another user).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyterlab_server import LabServerApp

HERE = Path(__file__).resolve().parent
BUILD = Path(os.environ.get("IK_LAB_BUILD", HERE / "build"))

# Not JUPYTER_NO_CONFIG (as JupyterLab's example app sets): jupyter_core then
# leaves a jupyter-clean-cfg-* directory in /tmp behind. The tests give the
# server a private JUPYTER_CONFIG_DIR instead.


class IsolatedLab(LabServerApp):
    name = "isolated_lab"
    extension_url = "/lab"
    default_url = "/lab"
    load_other_extensions = False
    app_name = "JupyterLab (isolated-kernel tests)"
    app_version = json.loads((HERE / "package.json").read_text())["dependencies"]["@jupyterlab/application"]
    static_dir = str(BUILD)
    schemas_dir = str(BUILD / "schemas")
    themes_dir = str(BUILD / "themes")
    app_settings_dir = str(BUILD / "application_settings")
    templates_dir = str(HERE / "templates")
    user_settings_dir = os.path.join(jupyter_data_dir(), "isolated-lab", "user-settings")
    workspaces_dir = os.path.join(jupyter_data_dir(), "isolated-lab", "workspaces")

    def initialize_settings(self):
        super().initialize_settings()
        # No terminals: the tests are about kernels.
        self.serverapp.web_app.settings["terminals_available"] = False


def _jupyter_server_extension_points():
    return [{"module": __name__, "app": IsolatedLab}]


if __name__ == "__main__":
    sys.exit(IsolatedLab.launch_instance())
