#!/usr/bin/env bash
# scripts/redis.sh - install, start, wait for, and stop a throw-away Redis on
# loopback for tests and local runs (no persistence, no system service).
#
# Usage: scripts/redis.sh {start|stop|status|wait}
#
#   start   install redis-server with apt if missing, start it daemonized on
#           127.0.0.1:$LARKWAY_REDIS_PORT and wait for PONG. Reuses a Redis
#           that already answers on that port. Idempotent.
#   wait    wait (bounded) until the port answers PING with PONG.
#   status  print whether Redis answers; exit 0 only when it does.
#   stop    TERM the Redis this script started (pid file), KILL after 10 s;
#           a no-op when not running. Never touches a Redis it did not start.
#
# Environment (all optional):
#   LARKWAY_REDIS_PORT       port (default 6379)
#   LARKWAY_RUN_DIR          pid/log/dir root (default /tmp/larkway-run)
#   LARKWAY_REDIS_WAIT_SECS  readiness timeout (default 20)
set -euo pipefail

PROG=redis.sh
HOST=127.0.0.1
PORT=${LARKWAY_REDIS_PORT:-6379}
RUN_DIR=${LARKWAY_RUN_DIR:-/tmp/larkway-run}/redis
PID_FILE=$RUN_DIR/redis-$PORT.pid
LOG_FILE=$RUN_DIR/redis-$PORT.log
WAIT_SECS=${LARKWAY_REDIS_WAIT_SECS:-20}
STOP_SECS=10

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_installed() {
	if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || die "redis-server is missing and apt-get is not available"
	log "redis-server not found; installing it with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
	command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
	command -v redis-cli >/dev/null 2>&1 || die "redis-cli still missing after apt-get install"
}

pong() {
	[ "$(timeout 3 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" = PONG ]
}

# our_pid: the pid from our pid file when that process is a live redis-server.
our_pid() {
	local pid
	[ -r "$PID_FILE" ] || return 0
	pid=$(cat "$PID_FILE" 2>/dev/null || true)
	case $pid in '' | *[!0-9]*) return 0 ;; esac
	[ -r "/proc/$pid/cmdline" ] || return 0
	if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "redis-server.*:$PORT"; then
		printf '%s\n' "$pid"
	fi
}

port_busy() {
	(exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

# alive PID: running and not a zombie.
alive() {
	kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]
}

do_wait() {
	local pid=${1:-} start=$SECONDS deadline=$((SECONDS + WAIT_SECS))
	while ! pong; do
		if [ -n "$pid" ] && ! alive "$pid"; then
			log "ERROR: redis-server (pid $pid) exited before answering"
			[ -s "$LOG_FILE" ] && tail -n 50 "$LOG_FILE" >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "ERROR: Redis on $HOST:$PORT did not answer PONG within ${WAIT_SECS}s"
			[ -s "$LOG_FILE" ] && tail -n 50 "$LOG_FILE" >&2
			return 1
		fi
		sleep 0.2
	done
	log "Redis ready on $HOST:$PORT after $((SECONDS - start))s"
}

cmd_start() {
	ensure_installed
	local pid
	pid=$(our_pid)
	if [ -n "$pid" ]; then
		log "Redis already running (pid $pid)"
		do_wait "$pid"
		return
	fi
	if pong; then
		log "a Redis not started by this script already answers on $HOST:$PORT; reusing it"
		return 0
	fi
	if port_busy; then
		log "ERROR: port $PORT on $HOST is taken by something that is not Redis:"
		if command -v ss >/dev/null 2>&1; then ss -ltnp "sport = :$PORT" >&2 || true; fi
		exit 1
	fi
	mkdir -p "$RUN_DIR"
	rm -f "$PID_FILE"
	log "starting redis-server on $HOST:$PORT (no persistence; log $LOG_FILE)"
	redis-server --bind "$HOST" --port "$PORT" --protected-mode yes \
		--daemonize yes --pidfile "$PID_FILE" --dir "$RUN_DIR" --logfile "$LOG_FILE" \
		--save "" --appendonly no </dev/null ||
		{ [ -s "$LOG_FILE" ] && tail -n 50 "$LOG_FILE" >&2; die "redis-server failed to start"; }
	# The daemon writes its pid file right after forking.
	local _
	for _ in $(seq 1 50); do
		pid=$(our_pid)
		[ -n "$pid" ] && break
		sleep 0.1
	done
	if [ -z "$pid" ]; then
		[ -s "$LOG_FILE" ] && tail -n 50 "$LOG_FILE" >&2
		die "redis-server did not write $PID_FILE"
	fi
	log "redis-server started (pid $pid)"
	if ! do_wait "$pid"; then
		cmd_stop || true
		exit 1
	fi
}

cmd_stop() {
	local pid
	pid=$(our_pid)
	if [ -z "$pid" ]; then
		log "Redis not running"
		rm -f "$PID_FILE"
		if pong; then
			log "note: a Redis not started by this script still answers on $HOST:$PORT; left alone"
		fi
		return 0
	fi
	log "stopping Redis (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + STOP_SECS))
	while alive "$pid"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "still running after ${STOP_SECS}s; sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
			! alive "$pid" || die "redis-server pid $pid survived KILL"
			break
		fi
		sleep 0.1
	done
	# Give init a moment to reap it so no <defunct> redis-server lingers.
	local _
	for _ in $(seq 1 20); do
		[ -e "/proc/$pid" ] || break
		sleep 0.25
	done
	rm -f "$PID_FILE"
	log "Redis stopped"
}

cmd_status() {
	local pid
	pid=$(our_pid)
	if pong; then
		if [ -n "$pid" ]; then
			log "Redis running (pid $pid) and answering on $HOST:$PORT"
		else
			log "a Redis not started by this script answers on $HOST:$PORT"
		fi
		return 0
	fi
	if [ -n "$pid" ]; then log "Redis running (pid $pid) but not answering"; else log "Redis not running"; fi
	return 1
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
wait)
	ensure_installed
	do_wait "$(our_pid)"
	;;
*)
	echo "usage: $PROG {start|stop|status|wait}" >&2
	exit 2
	;;
esac
