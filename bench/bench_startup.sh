#!/usr/bin/env bash
# Time from launch to a visible main window, for the frozen bundle and from source, on a real X server.
# Needs Debian's xvfb and xdotool (apt-get install xvfb xdotool libxcb-icccm4 libxcb-keysyms1) and `make bundle`.
set -euo pipefail
cd "$(dirname "$0")/.."
Xvfb :77 -screen 0 1600x1000x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $xvfb 2>/dev/null' EXIT
sleep 1
export DISPLAY=:77 QT_QPA_PLATFORM=xcb
measure() {  # $1: label, rest: command
  local label=$1; shift
  for i in 1 2 3; do
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 &
    pid=$!
    xdotool search --sync --onlyvisible --name "NLICA Lab" >/dev/null
    t1=$(date +%s.%N)
    kill $pid; wait $pid 2>/dev/null || true
    printf '%s run %d: %.2f s to a visible window\n' "$label" "$i" "$(echo "$t1 - $t0" | bc)"
  done
}
measure frozen dist/nlica-lab/nlica-lab
measure source .venv/bin/python main.py
