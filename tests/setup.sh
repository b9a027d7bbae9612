#!/bin/sh
# Install what the tests need: the package with its test extras, and Debian's chromium for the browser
# tests (playwright drives it; its own browser download is not used). Safe to run again.
set -e
cd "$(dirname "$0")/.."
pip install -e ".[test]"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is not installed; the browser tests will be skipped (as root: apt-get install chromium)" >&2
  fi
fi
