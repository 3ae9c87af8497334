#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages when it is missing (as root, through apt),
# and prints the variable tests/browser.rs reads. Idempotent.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >&2; }
  else
    echo "chromium is not installed and cannot be (needs root and apt-get); the browser test will be skipped" >&2
    exit 0
  fi
fi
echo "LIM_TEST_CHROMIUM=$(command -v chromium)"
