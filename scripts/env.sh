#!/usr/bin/env bash
# scripts/env.sh - print `export` lines for the endpoints that scripts/redis.sh
# and scripts/pulsar.sh serve, keeping any value already set in the
# environment.
#
# Usage: eval "$(scripts/env.sh)"
#
#   LARKWAY_REDIS_ADDR         default 127.0.0.1:${LARKWAY_REDIS_PORT:-6379}
#   LARKWAY_PULSAR_URL         default pulsar://127.0.0.1:${LARKWAY_PULSAR_PORT:-6650}
#   LARKWAY_PULSAR_ADMIN_URL   default http://127.0.0.1:${LARKWAY_PULSAR_ADMIN_PORT:-8080}
set -euo pipefail

redis_addr=${LARKWAY_REDIS_ADDR:-127.0.0.1:${LARKWAY_REDIS_PORT:-6379}}
pulsar_url=${LARKWAY_PULSAR_URL:-pulsar://127.0.0.1:${LARKWAY_PULSAR_PORT:-6650}}
pulsar_admin_url=${LARKWAY_PULSAR_ADMIN_URL:-http://127.0.0.1:${LARKWAY_PULSAR_ADMIN_PORT:-8080}}

printf 'export LARKWAY_REDIS_ADDR=%q\n' "$redis_addr"
printf 'export LARKWAY_PULSAR_URL=%q\n' "$pulsar_url"
printf 'export LARKWAY_PULSAR_ADMIN_URL=%q\n' "$pulsar_admin_url"
