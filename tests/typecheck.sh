#!/usr/bin/env bash
# mypy over the installed namespace. mypy cannot follow setuptools' editable import hook, so this
# lays a tree of links shaped like the installed package (robobus/ with bus/, schemas/, ... in it)
# and checks that, with the settings of [tool.mypy] in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-$root/.venv/bin/python}
# a fresh folder per run (two runs at once shared build/typecheck and removed each other's links)
tree=$(mktemp -d "${TMPDIR:-/tmp}/robobus-typecheck.XXXXXX")
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/robobus"
for entry in robobus/*; do
  [ "$(basename "$entry")" = __pycache__ ] || ln -s "$root/$entry" "$tree/robobus/"
done
for pkg in bus schemas skills brain_agent edge_agent memory_store; do
  ln -s "$root/$pkg" "$tree/robobus/$pkg"
done
cd "$tree"
"$py" -m mypy --config-file "$root/pyproject.toml" -p robobus "$@"
