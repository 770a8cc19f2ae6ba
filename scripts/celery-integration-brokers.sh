#!/usr/bin/env bash
# Private, plain (no TLS) brokers for the baseline of Celery's own integration suite
# (docs/celery-integration.md): a RabbitMQ node and a Redis server of their own, on
# loopback, with every file under DIR. Leaves /etc, the system services and their
# ports (5671, 5672, 6379, 6380) alone.
#   bash scripts/celery-integration-brokers.sh start DIR
#   bash scripts/celery-integration-brokers.sh stop DIR
# Ports (override with the environment): RabbitMQ AMQP $CI_AMQP_PORT (5710), its Erlang
# distribution $CI_DIST_PORT (25710), Redis $CI_REDIS_PORT (6410).
# Runs RabbitMQ as the calling user (/usr/lib/rabbitmq/bin: /usr/sbin/rabbitmq-server would
# switch to the rabbitmq user and lose this environment).
# Prints the broker URLs to pass to `scripts/celery_integration.py --plain`.
set -euo pipefail
action=${1:?usage: $0 start|stop DIR}
dir=${2:?usage: $0 start|stop DIR}
amqp_port=${CI_AMQP_PORT:-5710}
dist_port=${CI_DIST_PORT:-25710}
redis_port=${CI_REDIS_PORT:-6410}
node=${CI_NODENAME:-cp-integ@localhost}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rmq_env() {
  env PATH="/usr/lib/rabbitmq/bin:$PATH" HOME="$dir/rabbitmq/home" RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT="$dist_port" \
    RABBITMQ_MNESIA_BASE="$dir/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$dir/rabbitmq/log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq/node.pid" RABBITMQ_CONFIG_FILE="$dir/rabbitmq/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/rabbitmq/enabled_plugins" ERL_EPMD_ADDRESS=127.0.0.1 "$@"
}

case $action in
start)
  mkdir -p "$dir/rabbitmq/home" "$dir/rabbitmq/mnesia" "$dir/rabbitmq/log" "$dir/redis"
  echo '[].' >"$dir/rabbitmq/enabled_plugins"
  printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$amqp_port" \
    >"$dir/rabbitmq/rabbitmq.conf"
  rmq_env rabbitmq-server -detached
  cat >"$dir/redis/redis.conf" <<EOF
bind 127.0.0.1
port $redis_port
daemonize yes
pidfile $dir/redis/redis.pid
logfile $dir/redis/redis.log
dir $dir/redis
save ""
appendonly no
EOF
  redis-server "$dir/redis/redis.conf"
  rmq_env rabbitmqctl -n "$node" wait --timeout 120 "$dir/rabbitmq/node.pid" >/dev/null
  rmq_env rabbitmqctl -n "$node" await_startup >/dev/null
  echo "broker: amqp://guest:guest@127.0.0.1:$amqp_port//"
  echo "redis:  redis://127.0.0.1:$redis_port/0"
  ;;
stop)
  rmq_env rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
  if [[ -f $dir/redis/redis.pid ]]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
  fi
  ;;
ctl)  # rabbitmqctl against the private node: ctl DIR ARGS...
  shift 2
  rmq_env rabbitmqctl -n "$node" "$@"
  ;;
*)
  echo "usage: $0 start|stop|ctl DIR" >&2
  exit 2
  ;;
esac
