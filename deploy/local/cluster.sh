#!/usr/bin/env bash
# A three-node mqcluster cluster as processes on the loopback interface
# (make cluster, make cluster-down).
#
#   deploy/local/cluster.sh up       start the nodes, wait until they formed the cluster
#   deploy/local/cluster.sh down     stop them (SIGTERM, then SIGKILL after 15 s)
#   deploy/local/cluster.sh status   which nodes run
#
# Node i (n0, n1, n2) listens for MQTT on 127.0.0.1:1883+i, for Raft on
# 7000+i, node-to-node gRPC on 7010+i, memberlist on 7946+i and its admin
# server on 8081+i. Its data is in $CLUSTER_DIR/n<i> (default bin/cluster),
# its log in $CLUSTER_DIR/n<i>.log. The data stays after `down`: the next `up`
# restarts the same cluster; remove the directory for a new one.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${BIN:-bin/mqcluster}
DIR=${CLUSTER_DIR:-bin/cluster}
NODES=(0 1 2)
SEEDS=127.0.0.1:7946,127.0.0.1:7947,127.0.0.1:7948

# running <i>: whether node i's recorded process is alive and is mqcluster.
running() {
	local pid
	pid=$(cat "$DIR/n$1.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && grep -qa mqcluster "/proc/$pid/cmdline" 2>/dev/null
}

# listening <port>: whether something accepts TCP connections on it.
listening() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

up() {
	[ -x "$BIN" ] || { echo "$BIN not found: make build" >&2; exit 1; }
	mkdir -p "$DIR"
	for i in "${NODES[@]}"; do
		if running "$i"; then
			echo "n$i runs already (pid $(cat "$DIR/n$i.pid")): make cluster-down first" >&2
			exit 1
		fi
		for port in $((1883 + i)) $((7000 + i)) $((7010 + i)) $((7946 + i)) $((8081 + i)); do
			if listening "$port"; then
				echo "port $port on 127.0.0.1 is taken: n$i needs it (a broker started by make run? make cluster-down?)" >&2
				exit 1
			fi
		done
	done
	local from=()
	for i in "${NODES[@]}"; do
		# This run's lines of the log start after the ones there now.
		from[i]=1
		if [ -f "$DIR/n$i.log" ]; then
			from[i]=$(($(wc -l <"$DIR/n$i.log") + 1))
		fi
		nohup "$BIN" serve \
			--listen "127.0.0.1:$((1883 + i))" --data-dir "$DIR/n$i" --node-id "n$i" \
			--admin-address "127.0.0.1:$((8081 + i))" \
			--bootstrap-expect 3 --join "$SEEDS" \
			--raft-addr "127.0.0.1:$((7000 + i))" --grpc-addr "127.0.0.1:$((7010 + i))" \
			--gossip-addr "127.0.0.1:$((7946 + i))" \
			>>"$DIR/n$i.log" 2>&1 </dev/null &
		echo $! >"$DIR/n$i.pid"
	done
	# Formed once every node is in contact with a leader ("joined the
	# cluster", logged by this run of the node) and takes MQTT connections.
	local deadline=$((SECONDS + 60))
	for i in "${NODES[@]}"; do
		until listening $((1883 + i)) && tail -n +"${from[i]}" "$DIR/n$i.log" | grep -q "joined the cluster"; do
			if ! running "$i"; then
				echo "n$i stopped; the end of $DIR/n$i.log:" >&2
				tail -n 20 "$DIR/n$i.log" >&2
				down >/dev/null
				exit 1
			fi
			if [ $SECONDS -ge $deadline ]; then
				echo "the cluster did not form within 60 s; the end of $DIR/n$i.log:" >&2
				tail -n 20 "$DIR/n$i.log" >&2
				exit 1
			fi
			sleep 0.2
		done
	done
	cat <<EOF
three nodes in one cluster:
  n0  mqtt 127.0.0.1:1883  admin http://127.0.0.1:8081  log $DIR/n0.log
  n1  mqtt 127.0.0.1:1884  admin http://127.0.0.1:8082  log $DIR/n1.log
  n2  mqtt 127.0.0.1:1885  admin http://127.0.0.1:8083  log $DIR/n2.log
try it, subscribing on n2 and publishing on n0:
  mosquitto_sub -p 1885 -t 'demo/#' -v -C 1 -W 10 & sleep 1
  mosquitto_pub -p 1883 -t demo/hello -m 'from n0'
see it: bin/mqcluster ctl --admin 127.0.0.1:8081 members
stop it: make cluster-down
EOF
}

down() {
	local pids=()
	for i in "${NODES[@]}"; do
		if running "$i"; then
			pids+=("$(cat "$DIR/n$i.pid")")
		fi
		rm -f "$DIR/n$i.pid"
	done
	if [ ${#pids[@]} -eq 0 ]; then
		echo "no node runs"
		return 0
	fi
	kill -TERM "${pids[@]}" 2>/dev/null || true
	local deadline=$((SECONDS + 15))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null; do
			if [ $SECONDS -ge $deadline ]; then
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	done
	echo "stopped ${#pids[@]} nodes (data and logs kept in $DIR)"
}

status() {
	for i in "${NODES[@]}"; do
		if running "$i"; then
			echo "n$i runs, pid $(cat "$DIR/n$i.pid"), mqtt 127.0.0.1:$((1883 + i))"
		else
			echo "n$i is stopped"
		fi
	done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
