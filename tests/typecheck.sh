#!/usr/bin/env bash
# mypy over the installed namespace. mypy cannot follow setuptools' editable import hook, so this
# lays a tree of links shaped like the installed package (robobus/ with bus/, schemas/, ... in it)
# and checks that, with the settings of [tool.mypy] in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-$root/.venv/bin/python}
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/robobus"
for entry in robobus/*; do
  [ "$(basename "$entry")" = __pycache__ ] || ln -s "$root/$entry" "$tree/robobus/"
done
for pkg in bus schemas skills brain_agent edge_agent memory_store; do
  ln -s "$root/$pkg" "$tree/robobus/$pkg"
done
cd "$tree"
exec "$py" -m mypy --config-file "$root/pyproject.toml" -p robobus "$@"
