#!/usr/bin/env bash
# Set up myonode on Debian 12 and run the demo or the test suite.
#
#   deploy/setup.sh demo   install, then run `myonode demo` on embedded defaults
#   deploy/setup.sh test   install with test tools, then run the whole test suite
#
# Needs root or sudo for apt; everything else goes into ./.venv (Debian's python3.11, so the
# Orthanc Python plugin, which embeds the same interpreter, can import the node).
set -euo pipefail
mode="${1:-demo}"
case "$mode" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."

packages() {  # the package list for a role, from deploy/debian-packages.txt
  sed -n "s/^$1: //p" deploy/debian-packages.txt
}

if command -v apt-get >/dev/null; then
  wanted="$(packages runtime)"
  [ "$mode" = test ] && wanted="$wanted $(packages test)"
  missing=$(for p in $wanted; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
  fi
else
  echo "warning: no apt-get; install these yourself: $(packages runtime) $(packages test)" >&2
fi

python=/usr/bin/python3.11
[ -x "$python" ] || python="$(command -v python3.11 || command -v python3)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first, pinned: the CPU wheel; an unpinned resolve would pull GBs of CUDA packages.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
if [ "$mode" = test ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
  exec .venv/bin/python -m pytest -q
else
  .venv/bin/pip install -q --disable-pip-version-check -e .
  exec .venv/bin/myonode demo
fi
