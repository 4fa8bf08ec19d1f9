#!/usr/bin/env bash
# A local three-node cluster on loopback, without Docker: three Kafka 3.9 brokers (KRaft, each also a
# controller; replication 3, min.insync.replicas 2) and three Cassandra 5.0 nodes (127.0.0.1-3, one
# datacenter), beside the single-node services of services.sh (own ports, data dirs and names).
# Usage: cluster.sh up|down|status|kill NODE|start NODE|logs [NODE]|wipe   (NODE: kafka1..3, cassandra1..3)
#   up     start every node that is down (Cassandra one after another: a node joins only when the
#          previous one is up) and write fusionrec.cluster.toml; idempotent
#   down   stop every node (SIGTERM, then SIGKILL after 30 s); data stays
#   kill   SIGKILL one node (a crash); start restarts it on the same data and waits until it answers
#   wipe   delete the cluster's data (every node must be down)
# Jars are the ones services.sh fetched into $FUSIONREC_SERVICES_HOME (default <repo>/.local), fetched
# through it when missing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
HOME_DIR="${FUSIONREC_SERVICES_HOME:-$REPO/.local}"
CLUSTER_DIR="${FUSIONREC_CLUSTER_HOME:-$HOME_DIR/cluster}"
TOML="${FUSIONREC_CLUSTER_TOML:-$REPO/fusionrec.cluster.toml}"
KAFKA_PORT="${FUSIONREC_CLUSTER_KAFKA_PORT:-29092}"                 # kafkaN listens on KAFKA_PORT+N-1
KAFKA_CONTROLLER_PORT="${FUSIONREC_CLUSTER_KAFKA_CONTROLLER_PORT:-29192}"  # its controller on this+N-1
KAFKA_HEAP="${FUSIONREC_CLUSTER_KAFKA_HEAP:-384m}"
CASSANDRA_PORT="${FUSIONREC_CLUSTER_CASSANDRA_PORT:-29042}"         # cassandraN: 127.0.0.N, same ports
CASSANDRA_STORAGE_PORT="${FUSIONREC_CLUSTER_CASSANDRA_STORAGE_PORT:-27000}"
CASSANDRA_JMX_PORT="${FUSIONREC_CLUSTER_CASSANDRA_JMX_PORT:-27199}"  # JMX binds 127.0.0.1 only: +100 per node
CASSANDRA_HEAP="${FUSIONREC_CLUSTER_CASSANDRA_HEAP:-768m}"
KAFKA_TIMEOUT="${FUSIONREC_KAFKA_START_TIMEOUT:-120}"
CASSANDRA_TIMEOUT="${FUSIONREC_CASSANDRA_START_TIMEOUT:-240}"
NODES=(kafka1 kafka2 kafka3 cassandra1 cassandra2 cassandra3)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=timer_slack.sh
source "$HERE/timer_slack.sh"

find_java17() {
  local cand
  if [[ -n "${FUSIONREC_JAVA_HOME:-}" ]]; then
    "$FUSIONREC_JAVA_HOME/bin/java" -version 2>&1 | head -1 | grep -q '"17\.' \
      || die "FUSIONREC_JAVA_HOME=$FUSIONREC_JAVA_HOME is not JDK 17; Cassandra 5.0 needs 17"
    echo "$FUSIONREC_JAVA_HOME/bin/java"; return 0
  fi
  for cand in "${JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-*; do
    [[ -n "$cand" && -x "$cand/bin/java" ]] || continue
    if "$cand/bin/java" -version 2>&1 | head -1 | grep -q '"17\.'; then echo "$cand/bin/java"; return 0; fi
  done
  if command -v java >/dev/null && java -version 2>&1 | head -1 | grep -q '"17\.'; then command -v java; return 0; fi
  die "JDK 17 not found (Cassandra 5.0 needs exactly 17). Install openjdk-17-jdk-headless or set FUSIONREC_JAVA_HOME."
}

port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }  # port_busy <ip> <port>
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_index() { echo "${1: -1}"; }
node_dir() { echo "$CLUSTER_DIR/$1"; }
node_pidf() { echo "$CLUSTER_DIR/$1/$1.pid"; }
node_log() { echo "$CLUSTER_DIR/$1/$1.log"; }
kafka_port() { echo $((KAFKA_PORT + $(node_index "$1") - 1)); }
kafka_controller_port() { echo $((KAFKA_CONTROLLER_PORT + $(node_index "$1") - 1)); }
cassandra_ip() { echo "127.0.0.$(node_index "$1")"; }
kafka_bootstrap() { echo "127.0.0.1:$KAFKA_PORT,127.0.0.1:$((KAFKA_PORT + 1)),127.0.0.1:$((KAFKA_PORT + 2))"; }

check_node() {
  case "$1" in kafka[123]|cassandra[123]) ;; *) die "unknown node '${1:-}' (kafka1..3, cassandra1..3)";; esac
}

libs() { # the jars services.sh fetched; fetched through it once when missing
  local name
  for name in kafka cassandra; do
    [[ -f "$HOME_DIR/$name/lib/.complete" ]] || bash "$HERE/services.sh" fetch "$name" \
      || die "could not fetch the $name jars (see above)"
  done
}

wait_ready() { # wait_ready <node> <timeout> <check-cmd...>
  local node="$1" timeout="$2"; shift 2
  local start=$SECONDS pidf logf; pidf="$(node_pidf "$node")"; logf="$(node_log "$node")"
  while (( SECONDS - start < timeout )); do
    if ! pid_alive "$pidf"; then
      log "$node exited during startup; its errors, then the last lines of $logf:"
      grep -E -A3 '^(ERROR|WARN)|Exception' "$logf" | head -40 >&2 || true; tail -15 "$logf" >&2 || true
      rm -f "$pidf"; return 1
    fi
    if "$@" >/dev/null 2>&1; then log "$node ready in $((SECONDS - start))s"; return 0; fi
    sleep 0.5
  done
  log "$node not ready after ${timeout}s; last lines of $logf:"; tail -40 "$logf" >&2 || true
  return 1
}

# ---------------------------------------------------------------------------------------------- kafka
kafka_config() { # every broker is also a controller: killing one leaves a quorum of 2 of 3 voters
  local node="$1" dir; dir="$(node_dir "$1")"
  local voters="1@127.0.0.1:$KAFKA_CONTROLLER_PORT,2@127.0.0.1:$((KAFKA_CONTROLLER_PORT + 1)),3@127.0.0.1:$((KAFKA_CONTROLLER_PORT + 2))"
  mkdir -p "$dir/data" "$dir/tmp"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$(node_index "$node")
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(kafka_port "$node"),CONTROLLER://127.0.0.1:$(kafka_controller_port "$node")
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka_port "$node")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
# a crashed broker is fenced (its partitions get new leaders) after 6 s instead of 9
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
# 2 cores shared by six JVMs and the workers: fewer threads than the stock 3 + 8
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
PROPS
  cat > "$dir/log4j.properties" <<PROPS
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
PROPS
}

kafka_jopts() {
  local dir; dir="$(node_dir "$1")"
  printf '%s\n' -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" \
    -Djava.io.tmpdir="$dir/tmp" -Dorg.xerial.snappy.tempdir="$dir/tmp" -DZstdTempFolder="$dir/tmp"
}

kafka_launch() { # starts the process without waiting: the first broker is ready only once a quorum is
  local node="$1" dir pidf logf java; dir="$(node_dir "$1")"; pidf="$(node_pidf "$1")"; logf="$(node_log "$1")"
  if pid_alive "$pidf"; then log "$node already running (pid $(cat "$pidf")) on 127.0.0.1:$(kafka_port "$node")"; return 0; fi
  port_busy 127.0.0.1 "$(kafka_port "$node")" && die "port $(kafka_port "$node") is busy but not by $node; set FUSIONREC_CLUSTER_KAFKA_PORT"
  port_busy 127.0.0.1 "$(kafka_controller_port "$node")" && die "port $(kafka_controller_port "$node") is busy; set FUSIONREC_CLUSTER_KAFKA_CONTROLLER_PORT"
  check_timer_slack KAFKA_TIMER_SLACK_US
  java="$(find_java17)"
  kafka_config "$node"
  local cp="$HOME_DIR/kafka/lib/*" jopts; mapfile -t jopts < <(kafka_jopts "$node")
  local idf="$CLUSTER_DIR/kafka.cluster-id"
  if [[ ! -f "$idf" ]]; then "$java" -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 > "$idf"; fi
  if [[ ! -f "$dir/data/meta.properties" ]]; then  # once: every broker formatted with the one cluster id
    "$java" -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format -t "$(cat "$idf")" -c "$dir/server.properties" \
      --ignore-formatted > "$dir/format.log" 2>&1 || { tail -20 "$dir/format.log" >&2; die "$node storage format failed"; }
  fi
  [[ -f "$logf" ]] && mv -f "$logf" "$logf.1"  # readiness greps this run's log only
  log "starting $node on 127.0.0.1:$(kafka_port "$node") (log: $logf)"
  (with_timer_slack "$KAFKA_TIMER_SLACK_US" nohup "$java" -cp "$cp" "${jopts[@]}" kafka.Kafka "$dir/server.properties" \
    >> "$logf" 2>&1) &
  echo $! > "$pidf"
}

kafka_ready() { grep -q "Kafka Server started" "$(node_log "$1")" && port_busy 127.0.0.1 "$(kafka_port "$1")"; }

kafka_wait() { pid_alive "$(node_pidf "$1")" && kafka_ready "$1" && return 0; wait_ready "$1" "$KAFKA_TIMEOUT" kafka_ready "$1"; }

# ------------------------------------------------------------------------------------------ cassandra
cassandra_token() { # evenly spread, one token each: with RF 3 every node holds every row anyway
  case "$(node_index "$1")" in 1) echo "-9223372036854775808";; 2) echo "-3074457345618258603";; 3) echo "3074457345618258602";; esac
}

cassandra_config() {
  local node="$1" dir ip; dir="$(node_dir "$1")"; ip="$(cassandra_ip "$1")"
  mkdir -p "$dir/data" "$dir/conf" "$dir/logs" "$dir/tmp"
  cat > "$dir/conf/cassandra.yaml" <<YAML
cluster_name: fusionrec-cluster
num_tokens: 1
# a new, empty cluster: nodes take their tokens without streaming (nothing to stream), so a node
# never waits on, or refuses because of, another node still joining
auto_bootstrap: false
initial_token: '$(cassandra_token "$node")'
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$CASSANDRA_STORAGE_PORT"
listen_address: $ip
rpc_address: $ip
storage_port: $CASSANDRA_STORAGE_PORT
native_transport_port: $CASSANDRA_PORT
start_native_transport: true
data_file_directories:
  - $dir/data/data
commitlog_directory: $dir/data/commitlog
saved_caches_directory: $dir/data/saved_caches
hints_directory: $dir/data/hints
cdc_raw_directory: $dir/data/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
auto_snapshot: false
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 128KiB
# a node back from a crash gets the writes it missed from the others' hints (reads at QUORUM are
# right without them; hints make a later ONE read right too)
hinted_handoff_enabled: true
max_hint_window: 3h
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
read_request_timeout: 10000ms
write_request_timeout: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
YAML
  cat > "$dir/conf/logback.xml" <<XML
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
XML
}

cassandra_jopts() { # Cassandra 5.0's jvm-server.options + jvm17-server.options, as in services.sh
  local node="$1" dir lib jamm x; dir="$(node_dir "$1")"; lib="$HOME_DIR/cassandra/lib"
  jamm="$(ls "$lib"/jamm-*.jar | head -1)"
  printf '%s\n' -javaagent:"$jamm" -XX:+ExitOnOutOfMemoryError -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" \
    -ea -da:net.openhft... -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 \
    -XX:MaxGCPauseMillis=300 -Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true \
    -Djava.net.preferIPv4Stack=true \
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" -Dcassandra.storagedir="$dir/data" \
    -Dcassandra.logdir="$dir/logs" -Dlogback.configurationFile="$dir/conf/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.jmx.local.port="$((CASSANDRA_JMX_PORT + 100 * ($(node_index "$node") - 1)))" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dchronicle.analytics.disable=true \
    -Dcassandra.ring_delay_ms=1000 -Dcassandra.consistent.rangemovement=false \
    -Djava.io.tmpdir="$dir/tmp" -Djna.tmpdir="$dir/tmp" -Dorg.xerial.snappy.tempdir="$dir/tmp"
  for x in java.base/jdk.internal.misc java.base/jdk.internal.ref java.base/sun.nio.ch \
      java.management.rmi/com.sun.jmx.remote.internal.rmi java.management/com.sun.jmx.remote.security \
      java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.rmi/sun.rmi.transport.tcp java.sql/java.sql \
      java.base/java.lang.ref jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file \
      jdk.attach/sun.tools.attach; do printf '%s\n' --add-exports "$x=ALL-UNNAMED"; done
  for x in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
      java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
      java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal java.base/sun.nio.ch \
      java.base/java.io java.base/java.lang.reflect jdk.compiler/com.sun.tools.javac java.base/java.lang \
      java.base/java.util java.base/java.nio java.base/java.math java.base/java.net java.base/java.nio.charset \
      java.base/java.util.concurrent java.base/java.util.concurrent.atomic java.rmi/sun.rmi.transport.tcp; do
    printf '%s\n' --add-opens "$x=ALL-UNNAMED"; done
}

cassandra_ready() {
  grep -q "Starting listening for CQL clients" "$(node_log "$1")" && port_busy "$(cassandra_ip "$1")" "$CASSANDRA_PORT"
}

cassandra_start() { # starts one node and waits until it answers CQL (a joining node has then joined)
  local node="$1" dir pidf logf ip java; dir="$(node_dir "$1")"; pidf="$(node_pidf "$1")"; logf="$(node_log "$1")"
  ip="$(cassandra_ip "$node")"
  if pid_alive "$pidf"; then
    log "$node already running (pid $(cat "$pidf")) on $ip:$CASSANDRA_PORT"
    cassandra_ready "$node" || wait_ready "$node" "$CASSANDRA_TIMEOUT" cassandra_ready "$node"
    return
  fi
  port_busy "$ip" "$CASSANDRA_PORT" && die "port $ip:$CASSANDRA_PORT is busy but not by $node; set FUSIONREC_CLUSTER_CASSANDRA_PORT"
  port_busy "$ip" "$CASSANDRA_STORAGE_PORT" && die "port $ip:$CASSANDRA_STORAGE_PORT is busy; set FUSIONREC_CLUSTER_CASSANDRA_STORAGE_PORT"
  check_timer_slack CASSANDRA_TIMER_SLACK_US
  java="$(find_java17)"
  cassandra_config "$node"
  local jopts; mapfile -t jopts < <(cassandra_jopts "$node")
  [[ -f "$logf" ]] && mv -f "$logf" "$logf.1"
  log "starting $node on $ip:$CASSANDRA_PORT (log: $logf)"
  (with_timer_slack "$CASSANDRA_TIMER_SLACK_US" nohup "$java" "${jopts[@]}" -cp "$dir/conf:$HOME_DIR/cassandra/lib/*" \
    org.apache.cassandra.service.CassandraDaemon >> "$logf" 2>&1) &
  echo $! > "$pidf"
  wait_ready "$node" "$CASSANDRA_TIMEOUT" cassandra_ready "$node"
}

# ------------------------------------------------------------------------------------------ commands
write_toml() { # the settings that point fusionrec at this cluster (gitignored; FUSIONREC_CONFIG=...)
  cat > "$TOML" <<TOML
# Written by deploy/local/cluster.sh up: the local three-node cluster.
# Use it with FUSIONREC_CONFIG=fusionrec.cluster.toml (or copy the sections into fusionrec.toml).
# cassandra.write_consistency / read_consistency default to LOCAL_QUORUM at replication_factor >= 3:
# one node of three can be down without failing a read or a write.

[kafka]
bootstrap = "$(kafka_bootstrap)"
replication_factor = 3                   # topics fusionrec creates
min_insync_replicas = 2                  # acks=all writes survive one broker down

[cassandra]
hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
port = $CASSANDRA_PORT
replication_strategy = "SimpleStrategy"
replication_factor = 3
TOML
}

up() {
  libs
  mkdir -p "$CLUSTER_DIR"
  local n
  for n in kafka1 kafka2 kafka3; do kafka_launch "$n"; done  # the brokers start while Cassandra's nodes join
  for n in cassandra1 cassandra2 cassandra3; do cassandra_start "$n" || die "$n failed to start"; done
  for n in kafka1 kafka2 kafka3; do kafka_wait "$n" || die "$n failed to start"; done
  write_toml
  log "up: kafka $(kafka_bootstrap); cassandra 127.0.0.1-3:$CASSANDRA_PORT; settings in $TOML"
}

start_node() {
  check_node "$1"; libs; mkdir -p "$CLUSTER_DIR"
  case "$1" in
    kafka*) kafka_launch "$1"; kafka_wait "$1" || die "$1 failed to start" ;;
    cassandra*) cassandra_start "$1" || die "$1 failed to start" ;;
  esac
}

kill_node() { # SIGKILL, like a crash: no flush, no controlled shutdown
  check_node "$1"
  local pidf pid; pidf="$(node_pidf "$1")"
  if ! pid_alive "$pidf"; then rm -f "$pidf"; log "$1 not running"; return 0; fi
  pid="$(cat "$pidf")"
  kill -KILL "$pid" 2>/dev/null || true
  local i; for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidf"; log "$1 killed (pid $pid)"
}

stop_nodes() { # SIGTERM to all at once, then up to 30 s; only ever signals pids this script started.
  # At once: a KRaft broker stopping after the other two waits in vain for a controller quorum.
  local n pidf pids=() names=()
  for n in "$@"; do
    pidf="$(node_pidf "$n")"
    if pid_alive "$pidf"; then pids+=("$(cat "$pidf")"); names+=("$n"); kill -TERM "${pids[-1]}" 2>/dev/null || true
    else rm -f "$pidf"; fi
  done
  local i j
  for i in $(seq 1 60); do
    for j in "${!pids[@]}"; do kill -0 "${pids[$j]}" 2>/dev/null && continue
      rm -f "$(node_pidf "${names[$j]}")"; log "${names[$j]} stopped"; unset "pids[$j]"
    done
    (( ${#pids[@]} )) || return 0
    sleep 0.5
  done
  for j in "${!pids[@]}"; do
    log "${names[$j]} did not stop in 30s; killing"; kill -KILL "${pids[$j]}" 2>/dev/null || true
    rm -f "$(node_pidf "${names[$j]}")"
  done
}

down() { # Cassandra first, so no client write lands while Kafka goes
  stop_nodes cassandra1 cassandra2 cassandra3
  stop_nodes kafka1 kafka2 kafka3
}

status() {
  local n rc=0 addr
  for n in "${NODES[@]}"; do
    case "$n" in kafka*) addr="127.0.0.1:$(kafka_port "$n")" ;; *) addr="$(cassandra_ip "$n"):$CASSANDRA_PORT" ;; esac
    if ! pid_alive "$(node_pidf "$n")"; then echo "$n down $addr"; rc=1
    elif { [[ $n == kafka* ]] && kafka_ready "$n"; } || { [[ $n == cassandra* ]] && cassandra_ready "$n"; }; then
      echo "$n up $addr pid=$(cat "$(node_pidf "$n")")"
    else echo "$n starting $addr pid=$(cat "$(node_pidf "$n")")"; rc=1
    fi
  done
  return $rc
}

wipe() {
  local n
  for n in "${NODES[@]}"; do pid_alive "$(node_pidf "$n")" && die "$n is running: run \`cluster.sh down\` first"; done
  rm -rf "$CLUSTER_DIR"; log "wiped $CLUSTER_DIR"
}

cmd="${1:-status}"
case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  kill) kill_node "${2:-}" ;;
  start) start_node "${2:-}" ;;
  logs) if [[ -n "${2:-}" ]]; then set -- "$2"; else set -- "${NODES[@]}"; fi
    for n in "$@"; do check_node "$n"; echo "== $n"; tail -n "${FUSIONREC_LOG_LINES:-40}" "$(node_log "$n")" 2>/dev/null || echo "(no log)"; done ;;
  wipe) wipe ;;
  *) die "unknown command '$cmd' (up|down|status|kill NODE|start NODE|logs [NODE]|wipe)" ;;
esac
