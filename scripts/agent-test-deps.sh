#!/usr/bin/env bash
# Installs what the agent's tests need beyond Go modules: the npm packages of the AMQP
# test peer (rhea), exactly as locked. Needs node >= 20 and npm with the npm registry.
# python3 (for the MicroPython example's CPython run) is expected on the machine.
set -euo pipefail
cd "$(dirname "$0")/../testdata/amqp-peer"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "agent-test-deps: node and npm are required (node >= 20)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
