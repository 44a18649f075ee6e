#!/usr/bin/env bash
# scripts/pulsar.sh - install, start, wait for, and stop a real Apache Pulsar
# standalone broker (ZooKeeper + one bookie + broker in one JVM) on loopback,
# without Docker.
#
# Usage: scripts/pulsar.sh {install|start|stop|status|wait}
#
#   install  fetch the official server distribution from Maven Central
#            (org.apache.pulsar:pulsar-server-distribution:$PULSAR_VERSION:tar.gz:bin)
#            into the cache and extract it; a no-op when already there.
#   start    install if needed, write a CI standalone.conf, start the broker
#            in the background and wait until it is ready. Reuses a broker
#            that already answers on the admin port. Idempotent.
#   wait     wait until the broker is ready (clusters, public/default, health).
#   status   print whether the broker runs / answers; exit 0 only when ready.
#   stop     TERM our broker JVM, KILL it after LARKWAY_PULSAR_STOP_SECS;
#            a no-op when it is not running. Never touches a broker that this
#            script did not start.
#
# Environment (all optional):
#   PULSAR_VERSION              distribution version (default 4.0.8)
#   LARKWAY_CACHE               download cache root (default $HOME/.cache/larkway)
#   LARKWAY_RUN_DIR             pid/conf/data/log root (default /tmp/larkway-run)
#   LARKWAY_PULSAR_PORT         binary protocol port (default 6650)
#   LARKWAY_PULSAR_ADMIN_PORT   HTTP admin port (default 8080)
#   LARKWAY_PULSAR_BK_PORT      bookie port (default 3181); ZooKeeper is fixed at 2181
#   LARKWAY_PULSAR_JAVA_HOME    JDK to run the broker with (default: the
#                               system JDK 17, see pick_java_home)
#   LARKWAY_PULSAR_WAIT_SECS    readiness timeout (default 180)
#   LARKWAY_PULSAR_STOP_SECS    graceful stop timeout before KILL (default 30)
#   LARKWAY_PULSAR_MEM / LARKWAY_PULSAR_GC   override the JVM memory / GC flags
set -euo pipefail

PROG=pulsar.sh
PULSAR_VERSION=${PULSAR_VERSION:-4.0.8}
CACHE_DIR=${LARKWAY_CACHE:-$HOME/.cache/larkway}/pulsar
RUN_ROOT=${LARKWAY_RUN_DIR:-/tmp/larkway-run}
RUN_DIR=$RUN_ROOT/pulsar
HOST=127.0.0.1
BROKER_PORT=${LARKWAY_PULSAR_PORT:-6650}
ADMIN_PORT=${LARKWAY_PULSAR_ADMIN_PORT:-8080}
BK_PORT=${LARKWAY_PULSAR_BK_PORT:-3181}
ZK_PORT=2181 # PulsarStandalone 4.0 has no flag to change it
WAIT_SECS=${LARKWAY_PULSAR_WAIT_SECS:-180}
STOP_SECS=${LARKWAY_PULSAR_STOP_SECS:-30}

ARTIFACT=org.apache.pulsar:pulsar-server-distribution:$PULSAR_VERSION:tar.gz:bin
TARBALL=$CACHE_DIR/pulsar-server-distribution-$PULSAR_VERSION-bin.tar.gz
PULSAR_HOME_DIR=$CACHE_DIR/apache-pulsar-$PULSAR_VERSION
# $RUN_DIR doubles as the broker's PULSAR_HOME: bin/ and conf/ are copies of
# the distribution's, lib/ and instances/ link to it. bin/pulsar cd's to
# PULSAR_HOME and the standalone ZooKeeper keeps its data in the relative
# data/standalone/zookeeper (no flag for it in 4.0), so this keeps every byte
# of run-time state under $RUN_DIR and the cached distribution read-only.
PID_FILE=$RUN_DIR/pulsar.pid
CONF_FILE=$RUN_DIR/conf/standalone.conf
LOG_DIR=$RUN_DIR/logs
LOG_FILE=$LOG_DIR/pulsar.log
DATA_DIR=$RUN_DIR/data
ADMIN_URL=http://$HOST:$ADMIN_PORT
# Every JVM we start carries this exact argument; it identifies our broker
# (and only ours) in /proc/*/cmdline.
MARKER="-Dpulsar.config.file=$CONF_FILE"

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

APT_UPDATED=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# need CMD PACKAGE: install PACKAGE with apt when CMD is missing.
need() {
	command -v "$1" >/dev/null 2>&1 || apt_install "$2"
	command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# java_major JAVA_BIN -> prints the major version (17, 25, ...) or nothing.
java_major() {
	"$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n1
}

# The broker JDK: LARKWAY_PULSAR_JAVA_HOME if set, else the system default
# java when it is >= 17, else any JDK >= 17 under /usr/lib/jvm (Temurin 25
# works too), else install Debian's openjdk-17.
pick_java_home() {
	if [ -n "${LARKWAY_PULSAR_JAVA_HOME:-}" ]; then
		[ -x "$LARKWAY_PULSAR_JAVA_HOME/bin/java" ] ||
			die "LARKWAY_PULSAR_JAVA_HOME=$LARKWAY_PULSAR_JAVA_HOME has no bin/java"
		printf '%s\n' "$LARKWAY_PULSAR_JAVA_HOME"
		return
	fi
	local java major home
	if java=$(command -v java 2>/dev/null); then
		major=$(java_major "$java")
		if [ -n "$major" ] && [ "$major" -ge 17 ]; then
			home=$(dirname "$(dirname "$(readlink -f "$java")")")
			printf '%s\n' "$home"
			return
		fi
	fi
	for home in /usr/lib/jvm/java-17-openjdk-* /usr/lib/jvm/temurin-25-jdk-* /usr/lib/jvm/*; do
		[ -x "$home/bin/java" ] || continue
		major=$(java_major "$home/bin/java")
		if [ -n "$major" ] && [ "$major" -ge 17 ]; then
			printf '%s\n' "$home"
			return
		fi
	done
	apt_install openjdk-17-jre-headless
	home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
	printf '%s\n' "$home"
}

cmd_install() {
	if [ -x "$PULSAR_HOME_DIR/bin/pulsar" ] && [ -d "$PULSAR_HOME_DIR/lib" ]; then
		log "Pulsar $PULSAR_VERSION already installed at $PULSAR_HOME_DIR"
		return 0
	fi
	mkdir -p "$CACHE_DIR"
	if [ ! -s "$TARBALL" ]; then
		need mvn maven
		log "downloading $ARTIFACT from Maven (~245 MB) into $CACHE_DIR"
		local out
		out=$(mktemp)
		# -U: retry even if an earlier failure is cached in ~/.m2.
		if ! mvn -B -q -U -Dstyle.color=never \
			org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
			-Dartifact="$ARTIFACT" -DoutputDirectory="$CACHE_DIR" >"$out" 2>&1; then
			log "ERROR: Maven refused to download Pulsar $PULSAR_VERSION ($ARTIFACT)."
			log "mvn said:"
			sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E '^\[ERROR\] .' | head -n 3 >&2 ||
				tail -n 20 "$out" >&2
			rm -f "$out"
			log "hint: Maven Central serves 4.0.8 here (4.0.13 is refused); unset PULSAR_VERSION to use the default 4.0.8"
			exit 1
		fi
		rm -f "$out"
		[ -s "$TARBALL" ] || die "mvn succeeded but $TARBALL is missing"
	else
		log "using cached $TARBALL"
	fi
	log "extracting $TARBALL"
	local tmp
	tmp=$(mktemp -d "$CACHE_DIR/.extract.XXXXXX")
	if ! tar xzf "$TARBALL" -C "$tmp"; then
		rm -rf "$tmp"
		die "cannot extract $TARBALL (corrupt download? delete it and retry)"
	fi
	[ -x "$tmp/apache-pulsar-$PULSAR_VERSION/bin/pulsar" ] ||
		{ rm -rf "$tmp"; die "$TARBALL has no apache-pulsar-$PULSAR_VERSION/bin/pulsar"; }
	rm -rf "$PULSAR_HOME_DIR"
	mv "$tmp/apache-pulsar-$PULSAR_VERSION" "$PULSAR_HOME_DIR"
	rm -rf "$tmp"
	log "installed Pulsar $PULSAR_VERSION at $PULSAR_HOME_DIR"
}

# pid_is_ours PID: true when PID is alive and is our broker JVM.
pid_is_ours() {
	local pid=$1
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	{ tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qxF -- "$MARKER"
}

# is_alive PID: the process exists and is not a zombie.
is_alive() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null | cut -c1) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# our_pids: every live process whose command line carries our MARKER.
our_pids() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[ "$pid" = "$$" ] && continue
		if pid_is_ours "$pid"; then
			printf '%s\n' "$pid"
		fi
	done
}

# child_pids PID...: direct and indirect children of the given pids.
child_pids() {
	local pid kid
	for pid in "$@"; do
		for kid in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
			printf '%s\n' "$kid"
			child_pids "$kid"
		done
	done
}

# main_pid: the pid from the pid file when it is our broker, else the first
# process carrying our marker, else nothing.
main_pid() {
	local pid=""
	[ -r "$PID_FILE" ] && pid=$(cat "$PID_FILE" 2>/dev/null || true)
	if pid_is_ours "$pid"; then
		printf '%s\n' "$pid"
		return
	fi
	our_pids | head -n1
}

http_get() { curl -s --max-time 5 "$ADMIN_URL$1" 2>/dev/null || true; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$ADMIN_URL$1" 2>/dev/null || true; }

is_ready() {
	[ "$(http_get /admin/v2/clusters)" = '["standalone"]' ] &&
		[ "$(http_code /admin/v2/namespaces/public/default)" = 200 ] &&
		[ "$(http_get /admin/v2/brokers/health)" = ok ]
}

# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
	(exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

show_logs() {
	[ -s "$LOG_FILE" ] || { log "(no log output in $LOG_FILE)"; return 0; }
	log "---- last 100 lines of $LOG_FILE ----"
	tail -n 100 "$LOG_FILE" >&2
}

# do_wait [PID]: poll readiness for up to WAIT_SECS; fail early if PID dies.
do_wait() {
	local pid=${1:-} start=$SECONDS deadline=$((SECONDS + WAIT_SECS))
	log "waiting up to ${WAIT_SECS}s for Pulsar at $ADMIN_URL"
	while :; do
		if is_ready; then
			log "Pulsar ready after $((SECONDS - start))s (pulsar://$HOST:$BROKER_PORT, $ADMIN_URL)"
			return 0
		fi
		if [ -n "$pid" ] && ! is_alive "$pid"; then
			log "ERROR: the Pulsar JVM (pid $pid) exited before it was ready"
			show_logs
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "ERROR: Pulsar not ready after ${WAIT_SECS}s"
			show_logs
			return 1
		fi
		sleep 1
	done
}

# make_home: lay out $RUN_DIR as a PULSAR_HOME (see the comment at the top).
make_home() {
	local d
	for d in bin conf; do
		rm -rf "${RUN_DIR:?}/$d"
		cp -R "$PULSAR_HOME_DIR/$d" "$RUN_DIR/$d"
	done
	for d in lib instances; do
		rm -rf "${RUN_DIR:?}/$d"
		ln -s "$PULSAR_HOME_DIR/$d" "$RUN_DIR/$d"
	done
}

write_conf() {
	local overrides
	overrides=$(
		cat <<EOF
bindAddress=$HOST
advertisedAddress=$HOST
brokerServicePort=$BROKER_PORT
webServicePort=$ADMIN_PORT
clusterName=standalone
brokerShutdownTimeoutMs=3000
numIOThreads=2
numHttpServerThreads=8
loadManagerClassName=org.apache.pulsar.broker.loadbalance.NoopLoadManager
loadBalancerEnabled=false
brokerDeleteInactiveTopicsEnabled=false
transactionCoordinatorEnabled=false
allowAutoTopicCreation=true
allowAutoTopicCreationType=non-partitioned
allowAutoSubscriptionCreation=true
authenticationEnabled=false
authorizationEnabled=false
webSocketServiceEnabled=false
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
managedLedgerCacheSizeMB=64
dbStorage_writeCacheMaxSizeMb=64
dbStorage_readAheadCacheMaxSizeMb=32
dbStorage_rocksDB_blockCacheSize=33554432
journalSyncData=false
journalMaxGroupWaitMSec=1
diskUsageThreshold=0.99
diskUsageWarnThreshold=0.99
allowLoopback=true
# A nack of one message in a batch redelivers that message alone (when
# larkway batches publishes by key: bus.pulsar.batching).
acknowledgmentAtBatchIndexLevelEnabled=true
listeningInterface=lo
EOF
	)
	# Replace each key's line in the distribution's standalone.conf, append
	# the keys it does not have.
	awk -v overrides="$overrides" '
		BEGIN {
			n = split(overrides, lines, "\n")
			for (i = 1; i <= n; i++) {
				eq = index(lines[i], "=")
				if (eq == 0) continue
				k = substr(lines[i], 1, eq - 1)
				val[k] = lines[i]; order[++m] = k
			}
		}
		{
			eq = index($0, "=")
			if ($0 !~ /^[[:space:]]*#/ && eq > 0) {
				k = substr($0, 1, eq - 1)
				gsub(/[[:space:]]/, "", k)
				if (k in val) { print val[k]; done[k] = 1; next }
			}
			print
		}
		END {
			print ""
			print "### larkway CI overrides (scripts/pulsar.sh)"
			for (i = 1; i <= m; i++) if (!(order[i] in done)) print val[order[i]]
		}
	' "$PULSAR_HOME_DIR/conf/standalone.conf" >"$CONF_FILE.tmp"
	mv "$CONF_FILE.tmp" "$CONF_FILE"
}

cmd_start() {
	local pid
	pid=$(main_pid)
	if [ -n "$pid" ]; then
		log "Pulsar already running (pid $pid)"
		do_wait "$pid"
		return
	fi
	if [ "$(http_get /admin/v2/clusters)" = '["standalone"]' ]; then
		log "a Pulsar broker not started by this script already answers at $ADMIN_URL; reusing it"
		do_wait ""
		return
	fi
	local port
	for port in "$ADMIN_PORT" "$BROKER_PORT" "$ZK_PORT" "$BK_PORT"; do
		if port_busy "$port"; then
			log "ERROR: port $port on $HOST is taken by another process:"
			if command -v ss >/dev/null 2>&1; then ss -ltnp "sport = :$port" >&2 || true; fi
			exit 1
		fi
	done

	cmd_install
	need curl curl
	local java_home
	java_home=$(pick_java_home)
	log "using Java $(java_major "$java_home/bin/java") at $java_home"

	if [ "${LARKWAY_PULSAR_KEEP_DATA:-0}" = 1 ]; then
		rm -rf "$LOG_DIR"
	else
		rm -rf "$DATA_DIR" "$LOG_DIR"
	fi
	mkdir -p "$DATA_DIR" "$LOG_DIR"
	make_home
	write_conf

	local mem gc
	mem=${LARKWAY_PULSAR_MEM:--Xms1g -Xmx1g -XX:MaxDirectMemorySize=1g}
	gc=${LARKWAY_PULSAR_GC:--XX:+UseG1GC -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 -XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError}

	log "starting Pulsar $PULSAR_VERSION standalone (ZooKeeper mode) on $HOST: binary $BROKER_PORT, admin $ADMIN_PORT, zk $ZK_PORT, bookie $BK_PORT; logs in $LOG_DIR"
	# bin/pulsar execs java, so the launched pid becomes the JVM's pid.
	(
		exec 9>&- # do not hand the lock to the JVM
		cd "$RUN_DIR"
		export JAVA_HOME=$java_home
		export PULSAR_MEM=$mem PULSAR_GC=$gc
		export PULSAR_STANDALONE_USE_ZOOKEEPER=1
		export PULSAR_STANDALONE_CONF=$CONF_FILE
		export PULSAR_LOG_DIR=$LOG_DIR PULSAR_LOG_APPENDER=Console
		export PULSAR_GC_LOG="-Xlog:gc:file=$LOG_DIR/gc.log:time,uptime:filecount=2,filesize=10M"
		# LARKWAY_PULSAR_KEEP_DATA=1 restarts on the stored data (fault
		# tests stop and start the broker mid-run and must lose nothing).
		wipe=--wipe-data
		[ "${LARKWAY_PULSAR_KEEP_DATA:-0}" = 1 ] && wipe=
		exec setsid "$RUN_DIR/bin/pulsar" standalone \
			--no-functions-worker --no-stream-storage $wipe \
			--bookkeeper-dir "$DATA_DIR/bookkeeper" \
			--bookkeeper-port "$BK_PORT" \
			--metadata-dir "$DATA_DIR/metadata" \
			</dev/null >"$LOG_FILE" 2>&1
	) &
	local launched=$! i
	disown "$launched" 2>/dev/null || true # no "Killed" job notices from bash
	# Find the JVM (it carries MARKER once bin/pulsar has exec'd java).
	pid=""
	for i in $(seq 1 100); do
		pid=$(our_pids | head -n1)
		[ -n "$pid" ] && break
		if ! is_alive "$launched" && [ "$i" -gt 10 ]; then break; fi
		sleep 0.1
	done
	if [ -z "$pid" ]; then
		log "ERROR: the Pulsar JVM did not start"
		show_logs
		exit 1
	fi
	printf '%s\n' "$pid" >"$PID_FILE"
	log "Pulsar JVM started (pid $pid)"
	if ! do_wait "$pid"; then
		log "stopping the broker that failed to become ready"
		cmd_stop || true
		exit 1
	fi
}

cmd_wait() {
	local pid
	pid=$(main_pid)
	if [ -z "$pid" ] && ! port_busy "$ADMIN_PORT"; then
		die "Pulsar is not running (nothing on $HOST:$ADMIN_PORT); run: $0 start"
	fi
	do_wait "$pid"
}

cmd_status() {
	local pid
	pid=$(main_pid)
	if [ -n "$pid" ]; then
		local rss
		rss=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ' || true)
		log "Pulsar running (pid $pid, RSS ${rss:-?} KiB)"
	fi
	if is_ready; then
		[ -n "$pid" ] || log "a Pulsar broker not started by this script answers at $ADMIN_URL"
		log "ready: pulsar://$HOST:$BROKER_PORT $ADMIN_URL"
		return 0
	fi
	if [ -n "$pid" ]; then log "not ready yet"; else log "not running"; fi
	return 1
}

# wait_gone SECS PID...: true once none of the pids is alive (zombies count as gone).
wait_gone() {
	local secs=$1 pid alive
	shift
	local deadline=$((SECONDS + secs))
	while :; do
		alive=0
		for pid in "$@"; do
			if is_alive "$pid"; then
				alive=1
			fi
		done
		[ "$alive" = 0 ] && return 0
		[ "$SECONDS" -ge "$deadline" ] && return 1
		sleep 0.5
	done
}

cmd_stop() {
	local -a pids
	mapfile -t pids < <({ main_pid; our_pids; } | sort -u)
	if [ "${#pids[@]}" -eq 0 ]; then
		log "Pulsar not running"
		rm -f "$PID_FILE"
		if port_busy "$ADMIN_PORT"; then
			log "note: something not started by this script still listens on $HOST:$ADMIN_PORT; left alone"
		fi
		return 0
	fi
	mapfile -t pids < <({ printf '%s\n' "${pids[@]}"; child_pids "${pids[@]}"; } | sort -u)
	log "stopping Pulsar (pids ${pids[*]})"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	if ! wait_gone "$STOP_SECS" "${pids[@]}"; then
		log "still running after ${STOP_SECS}s; sending KILL"
		kill -KILL "${pids[@]}" 2>/dev/null || true
		wait_gone 10 "${pids[@]}" || die "pids ${pids[*]} survived KILL"
	fi
	# Give init a moment to reap the exited JVM so no <defunct> java lingers.
	local pid i
	for pid in "${pids[@]}"; do
		for i in $(seq 1 20); do
			[ -e "/proc/$pid" ] || break
			sleep 0.25
		done
	done
	local left
	left=$(our_pids | tr '\n' ' ')
	[ -z "$left" ] || die "broker processes still running after stop: $left"
	rm -f "$PID_FILE"
	[ "${LARKWAY_PULSAR_KEEP_DATA:-0}" = 1 ] || rm -rf "$DATA_DIR"
	log "Pulsar stopped (logs kept in $LOG_DIR)"
}

usage() {
	echo "usage: $PROG {install|start|stop|status|wait}" >&2
	exit 2
}

[ $# -eq 1 ] || usage
case $1 in
install | start | stop | status | wait) ;;
*) usage ;;
esac

need curl curl
mkdir -p "$RUN_DIR"
# Serialise concurrent start/stop calls.
if command -v flock >/dev/null 2>&1 && [ "$1" != status ]; then
	exec 9>"$RUN_DIR/.lock"
	flock -w $((WAIT_SECS + STOP_SECS + 60)) 9 || die "could not lock $RUN_DIR/.lock"
fi

case $1 in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
wait) cmd_wait ;;
esac
