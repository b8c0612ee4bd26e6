#!/usr/bin/env bash
# Healthcheck of the compose stack's RabbitMQ: the node running (definitions imported: that
# happens before boot completes) and its listeners up.
set -euo pipefail
rabbitmq-diagnostics -q check_running >/dev/null
rabbitmq-diagnostics -q check_port_connectivity >/dev/null
