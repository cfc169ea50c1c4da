#!/usr/bin/env bash
# A tiny demo service: answers on $PORT with a greeting. `--version` prints its version.
set -euo pipefail
VERSION="1.0.0"
if [[ "${1:-}" == "--version" ]]; then
  echo "demo $VERSION"
  exit 0
fi
PORT="${PORT:-8081}"
exec python3 -m http.server "$PORT" --bind 127.0.0.1
