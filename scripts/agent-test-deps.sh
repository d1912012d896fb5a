#!/usr/bin/env bash
# Installs what the agent's tests need beyond Go modules: the npm packages of the AMQP
# test peer (rhea), exactly as locked, and Debian's python3-paho-mqtt for the AWS IoT
# paho example (examples/python-paho). Needs node >= 20 and npm with the npm registry,
# and apt-get as root for the Debian package (skipped with a warning otherwise).
# python3 (for the MicroPython example's CPython run) is expected on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! /usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "agent-test-deps: installing python3-paho-mqtt"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-paho-mqtt >/dev/null
  else
    echo "agent-test-deps: warning: python3-paho-mqtt is missing (apt-get install python3-paho-mqtt); the paho example's test will skip" >&2
  fi
fi

cd testdata/amqp-peer
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "agent-test-deps: node and npm are required (node >= 20)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
