#!/usr/bin/env bash
# Set up myonode on Debian 12 and run the demo, the test suite, or a local stack.
#
#   deploy/setup.sh demo    install, then run `myonode demo` on embedded defaults
#   deploy/setup.sh test    install with test tools and OHIF, then run the whole test suite
#   deploy/setup.sh stack   install with Orthanc and OHIF, then run Orthanc + node + viewer
#                           on this machine (deploy/local_stack.py; Ctrl-C stops them)
#
# Needs root or sudo for apt; everything else goes into ./.venv (Debian's python3.11, so the
# Orthanc Python plugin, which embeds the same interpreter, can import the node's packages)
# and ./.ohif (the OHIF viewer, fetched with npm).
set -euo pipefail
mode="${1:-demo}"
case "$mode" in demo|test|stack) ;; *) echo "usage: $0 demo|test|stack" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."

packages() {  # the package list for a role, from deploy/debian-packages.txt
  sed -n "s/^$1: //p" deploy/debian-packages.txt
}

if command -v apt-get >/dev/null; then
  wanted="$(packages runtime)"
  [ "$mode" = test ] && wanted="$wanted $(packages test)"
  [ "$mode" = stack ] && wanted="$wanted $(packages stack)"
  missing=$(for p in $wanted; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ "$mode" != demo ] && ! command -v npm >/dev/null; then
    missing="$missing npm"
  fi
  if [ -n "${missing//[[:space:]]/}" ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
  fi
else
  echo "warning: no apt-get; install these yourself: $(packages runtime) $(packages test) npm" >&2
fi

python=/usr/bin/python3.11
[ -x "$python" ] || python="$(command -v python3.11 || command -v python3)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first, pinned: the CPU wheel; an unpinned resolve would pull GBs of CUDA packages.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
case "$mode" in
  test)
    .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
    deploy/install-ohif.sh .ohif
    exec .venv/bin/python -m pytest -q
    ;;
  stack)
    .venv/bin/pip install -q --disable-pip-version-check -e .
    deploy/install-ohif.sh .ohif
    exec .venv/bin/python deploy/local_stack.py myonode-stack
    ;;
  *)
    .venv/bin/pip install -q --disable-pip-version-check -e .
    exec .venv/bin/myonode demo
    ;;
esac
