#!/usr/bin/env bash
# The demo's tests: checks app.sh and writes a JUnit report to $1 (default report.xml).
set -uo pipefail
report="${1:-report.xml}"
passed=0 failed=0 cases=""

check() { # name, command…
  local name="$1"; shift
  if output="$("$@" 2>&1)"; then
    passed=$((passed + 1)); cases+="  <testcase classname=\"app\" name=\"$name\"/>"$'\n'
    echo "ok: $name"
  else
    failed=$((failed + 1))
    cases+="  <testcase classname=\"app\" name=\"$name\"><failure message=\"failed\">$output</failure></testcase>"$'\n'
    echo "FAILED: $name"
  fi
}

check "version has the form demo X.Y.Z" bash -c '[[ "$(./app.sh --version)" =~ ^demo\ [0-9]+\.[0-9]+\.[0-9]+$ ]]'
check "app.sh is executable" test -x ./app.sh

printf '<?xml version="1.0"?>\n<testsuite name="demo" tests="%d" failures="%d">\n%s</testsuite>\n' \
  "$((passed + failed))" "$failed" "$cases" > "$report"
[ "$failed" -eq 0 ]
