#!/usr/bin/env bash
# Headless Chromium + ChromeDriver for the run viewer's browser tests (tests/view/test_browser.py).
# `make test` and .ci/run call this first, so a fresh machine runs the same tests CI runs:
#   - both present: nothing to do;
#   - missing, and this is Debian (apt-get) as root: installs Debian's chromium and chromium-driver, saying so;
#   - otherwise: prints the one command that would install them (the browser tests then skip, saying why).
# Never fails the caller: a failed install leaves the browser tests skipping with their reason.
set -uo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
install="apt-get install -y chromium chromium-driver"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "==> installing Debian's chromium + chromium-driver for the browser tests ($install)"
  if apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $install -q >/dev/null; then
    echo "==> chromium installed"
  else
    echo "==> chromium install failed: the browser tests will skip"
  fi
elif command -v apt-get >/dev/null; then
  echo "==> no headless chromium: the browser tests will skip. Install it with: sudo $install"
else
  echo "==> no headless chromium: the browser tests will skip. Install Chromium and ChromeDriver" \
       "(on Debian/Ubuntu: sudo $install) to run them"
fi
exit 0
