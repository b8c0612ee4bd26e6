#!/usr/bin/env bash
# Healthcheck of the compose stack's RabbitMQ: users in place (start.sh) and the node running
# with its listeners up.
set -euo pipefail
test -f "${RABBITMQ_READY_FILE:-/var/lib/rabbitmq/switchyard.ready}"
rabbitmq-diagnostics -q check_running >/dev/null
rabbitmq-diagnostics -q check_port_connectivity >/dev/null
