#!/usr/bin/env bash
# Builds the JupyterLab test application into build/ -- or does nothing when
# build/.stamp matches the hash of the sources and the lock file.
#   tests/browser/jupyterlab/build.sh           build if stale; print what it did
#   tests/browser/jupyterlab/build.sh --check   exit 0 if current, 1 if stale (no build)
# node_modules/ is (re)installed with `npm ci` only when package-lock.json changed.
# Exit 3 (with the command to run) when node or npm is missing.
set -euo pipefail
cd "$(dirname "$0")"

stamp=$(cat package.json package-lock.json index.js webpack.config.js | sha256sum | cut -d' ' -f1)
if [[ -f build/.stamp && "$(cat build/.stamp)" == "$stamp" && -f build/bundle.js ]]; then
  [[ "${1:-}" == "--check" ]] || echo "jupyterlab app: build is current ($PWD/build)" >&2
  exit 0
fi
[[ "${1:-}" == "--check" ]] && exit 1

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "jupyterlab app: $tool not found; install it (Debian: apt-get install nodejs npm," \
         "or run scripts/install-deps as root)" >&2
    exit 3
  fi
done

# The CPU is shared: stay out of the way of compilers and other tests.
lock=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f node_modules/.ik-lock || "$(cat node_modules/.ik-lock)" != "$lock" ]]; then
  echo "jupyterlab app: npm ci (package-lock.json changed or node_modules missing)" >&2
  t0=$SECONDS
  # No install scripts: nothing in this tree needs one, and none should run as root.
  nice npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2
  echo "$lock" > node_modules/.ik-lock
  echo "jupyterlab app: npm ci took $((SECONDS - t0)) s" >&2
fi

echo "jupyterlab app: webpack build into $PWD/build" >&2
t0=$SECONDS
rm -rf build
nice node node_modules/webpack-cli/bin/cli.js --config webpack.config.js >build.log 2>&1 || {
  tail -40 build.log >&2; echo "jupyterlab app: webpack failed (full log: $PWD/build.log)" >&2; exit 1; }
echo "$stamp" > build/.stamp
echo "jupyterlab app: webpack took $((SECONDS - t0)) s" >&2
