#!/usr/bin/env bash
# The demo's unit test: the version string has the expected shape.
set -euo pipefail
version="$(./app.sh --version)"
[[ "$version" =~ ^demo\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "unexpected version: $version"; exit 1; }
echo "ok: $version"
