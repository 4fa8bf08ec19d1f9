#!/usr/bin/env bash
# Real Apache Kafka (KRaft, single node) and Apache Cassandra 5.0 on loopback, without Docker.
# Usage: services.sh up|down|status|logs [kafka|cassandra|all]
# Jars come from Maven Central once into $FUSIONREC_SERVICES_HOME (default <repo>/.local) and are reused.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
HOME_DIR="${FUSIONREC_SERVICES_HOME:-$REPO/.local}"
KAFKA_PORT="${FUSIONREC_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${FUSIONREC_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${FUSIONREC_KAFKA_HEAP:-512m}"
CASSANDRA_PORT="${FUSIONREC_CASSANDRA_PORT:-9042}"
CASSANDRA_STORAGE_PORT="${FUSIONREC_CASSANDRA_STORAGE_PORT:-7000}"
CASSANDRA_JMX_PORT="${FUSIONREC_CASSANDRA_JMX_PORT:-7199}"
CASSANDRA_HEAP="${FUSIONREC_CASSANDRA_HEAP:-1G}"
KAFKA_TIMEOUT="${FUSIONREC_KAFKA_START_TIMEOUT:-90}"
CASSANDRA_TIMEOUT="${FUSIONREC_CASSANDRA_START_TIMEOUT:-180}"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=timer_slack.sh
source "$HERE/timer_slack.sh"

find_java17() {
  local cand
  if [[ -n "${FUSIONREC_JAVA_HOME:-}" ]]; then
    "$FUSIONREC_JAVA_HOME/bin/java" -version 2>&1 | head -1 | grep -q '"17\.' \
      || die "FUSIONREC_JAVA_HOME=$FUSIONREC_JAVA_HOME is not JDK 17 ($("$FUSIONREC_JAVA_HOME/bin/java" -version 2>&1 | head -1)); Cassandra 5.0 needs 17"
    echo "$FUSIONREC_JAVA_HOME/bin/java"; return 0
  fi
  for cand in "${JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-*; do
    [[ -n "$cand" && -x "$cand/bin/java" ]] || continue
    if "$cand/bin/java" -version 2>&1 | head -1 | grep -q '"17\.'; then echo "$cand/bin/java"; return 0; fi
  done
  if command -v java >/dev/null && java -version 2>&1 | head -1 | grep -q '"17\.'; then command -v java; return 0; fi
  die "JDK 17 not found (Cassandra 5.0 needs exactly 17 here; JDK 24+ can never run it). Install openjdk-17-jdk-headless or set FUSIONREC_JAVA_HOME."
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { local f="$1"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

fetch() { # fetch <name>: resolve the server's jars once with Maven
  local name="$1" lib="$HOME_DIR/$1/lib"
  if [[ -f "$lib/.complete" ]]; then return 0; fi
  command -v mvn >/dev/null || die "maven (mvn) is needed once to fetch $name jars from Maven Central"
  log "fetching $name jars from Maven Central into $lib (once)"
  rm -rf "$lib"; mkdir -p "$lib"
  (cd "$HERE/$name" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$lib") \
    > "$HOME_DIR/$name-fetch.log" 2>&1 || { tail -20 "$HOME_DIR/$name-fetch.log" >&2; die "maven could not fetch $name"; }
  touch "$lib/.complete"
}

wait_ready() { # wait_ready <name> <timeout> <pidfile> <logfile> <check-cmd...>
  local name="$1" timeout="$2" pidf="$3" logf="$4"; shift 4
  local start=$SECONDS
  while (( SECONDS - start < timeout )); do
    if ! pid_alive "$pidf"; then
      log "$name exited during startup; last lines of $logf:"; tail -40 "$logf" >&2 || true
      rm -f "$pidf"; return 1
    fi
    if "$@" >/dev/null 2>&1; then log "$name ready in $((SECONDS - start))s"; return 0; fi
    sleep 0.5
  done
  log "$name not ready after ${timeout}s; last lines of $logf:"; tail -40 "$logf" >&2 || true
  return 1
}

kafka_up() {
  local dir="$HOME_DIR/kafka" pidf="$HOME_DIR/kafka/kafka.pid" logf="$HOME_DIR/kafka/kafka.log"
  if pid_alive "$pidf"; then log "kafka already running (pid $(cat "$pidf")) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  port_busy "$KAFKA_PORT" && die "port $KAFKA_PORT is busy but not by our Kafka; stop that process or set FUSIONREC_KAFKA_PORT"
  port_busy "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is busy; set FUSIONREC_KAFKA_CONTROLLER_PORT"
  fetch kafka
  check_timer_slack KAFKA_TIMER_SLACK_US
  local java; java="$(find_java17)"
  mkdir -p "$dir/data" "$dir/tmp"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
PROPS
  cat > "$dir/log4j.properties" <<PROPS
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
PROPS
  local cp="$dir/lib/*"
  local jopts=(-Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
    -Dlog4j.configuration="file:$dir/log4j.properties"
    -Djava.io.tmpdir="$dir/tmp" -Dorg.xerial.snappy.tempdir="$dir/tmp" -DZstdTempFolder="$dir/tmp")
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cid; cid="$("$java" -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    "$java" -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" --ignore-formatted \
      > "$dir/format.log" 2>&1 || { tail -20 "$dir/format.log" >&2; die "kafka storage format failed"; }
  fi
  [[ -f "$logf" ]] && mv -f "$logf" "$logf.1"  # readiness greps this run's log only
  log "starting kafka on 127.0.0.1:$KAFKA_PORT (log: $logf)"
  (with_timer_slack "$KAFKA_TIMER_SLACK_US" nohup "$java" -cp "$cp" "${jopts[@]}" kafka.Kafka "$dir/server.properties" \
    >> "$logf" 2>&1) &
  echo $! > "$pidf"
  wait_ready kafka "$KAFKA_TIMEOUT" "$pidf" "$logf" kafka_ready || die "kafka failed to start"
}

kafka_ready() {
  grep -q "Kafka Server started" "$HOME_DIR/kafka/kafka.log" && port_busy "$KAFKA_PORT"
}

cassandra_up() {
  local dir="$HOME_DIR/cassandra" pidf="$HOME_DIR/cassandra/cassandra.pid" logf="$HOME_DIR/cassandra/cassandra.log"
  if pid_alive "$pidf"; then log "cassandra already running (pid $(cat "$pidf")) on 127.0.0.1:$CASSANDRA_PORT"; return 0; fi
  port_busy "$CASSANDRA_PORT" && die "port $CASSANDRA_PORT is busy but not by our Cassandra; stop that process or set FUSIONREC_CASSANDRA_PORT"
  port_busy "$CASSANDRA_STORAGE_PORT" && die "port $CASSANDRA_STORAGE_PORT is busy; set FUSIONREC_CASSANDRA_STORAGE_PORT"
  fetch cassandra
  check_timer_slack CASSANDRA_TIMER_SLACK_US
  local java; java="$(find_java17)"
  mkdir -p "$dir/data" "$dir/conf" "$dir/logs" "$dir/tmp"
  cat > "$dir/conf/cassandra.yaml" <<YAML
cluster_name: fusionrec-local
num_tokens: 1
initial_token: '0'
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$CASSANDRA_STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
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
# the worker writes users in UNLOGGED batches (FUSIONREC_CASSANDRA__BATCH_KIB); 64 KiB lets 40 KiB batches pass
# without a warning per batch (stock: 5 KiB warn, 50 KiB fail)
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 128KiB
hinted_handoff_enabled: false
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
  local lib="$dir/lib"
  local jamm; jamm="$(ls "$lib"/jamm-*.jar | head -1)"
  local jopts=(-javaagent:"$jamm" -XX:+ExitOnOutOfMemoryError -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -ea -da:net.openhft... -Xss256k
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:MaxGCPauseMillis=300
    -Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true
    -Djava.net.preferIPv4Stack=true
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" -Dcassandra.storagedir="$dir/data"
    -Dcassandra.logdir="$dir/logs" -Dlogback.configurationFile="$dir/conf/logback.xml"
    -Dcassandra-foreground=yes -Dcassandra.jmx.local.port="$CASSANDRA_JMX_PORT"
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dchronicle.analytics.disable=true
    -Dcassandra.ring_delay_ms=100
    -Djava.io.tmpdir="$dir/tmp" -Djna.tmpdir="$dir/tmp" -Dorg.xerial.snappy.tempdir="$dir/tmp")
  local x
  for x in java.base/jdk.internal.misc java.base/jdk.internal.ref java.base/sun.nio.ch \
      java.management.rmi/com.sun.jmx.remote.internal.rmi java.management/com.sun.jmx.remote.security \
      java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.rmi/sun.rmi.transport.tcp java.sql/java.sql \
      java.base/java.lang.ref jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file \
      jdk.attach/sun.tools.attach; do jopts+=(--add-exports "$x=ALL-UNNAMED"); done
  for x in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
      java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
      java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal java.base/sun.nio.ch \
      java.base/java.io java.base/java.lang.reflect jdk.compiler/com.sun.tools.javac java.base/java.lang \
      java.base/java.util java.base/java.nio java.base/java.math java.base/java.net java.base/java.nio.charset \
      java.base/java.util.concurrent java.base/java.util.concurrent.atomic java.rmi/sun.rmi.transport.tcp; do
    jopts+=(--add-opens "$x=ALL-UNNAMED"); done
  [[ -f "$logf" ]] && mv -f "$logf" "$logf.1"  # readiness greps this run's log only
  log "starting cassandra on 127.0.0.1:$CASSANDRA_PORT (log: $logf)"
  (with_timer_slack "$CASSANDRA_TIMER_SLACK_US" nohup "$java" "${jopts[@]}" -cp "$dir/conf:$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >> "$logf" 2>&1) &
  echo $! > "$pidf"
  wait_ready cassandra "$CASSANDRA_TIMEOUT" "$pidf" "$logf" cassandra_ready || die "cassandra failed to start"
}

cassandra_ready() {
  grep -q "Starting listening for CQL clients" "$HOME_DIR/cassandra/cassandra.log" && port_busy "$CASSANDRA_PORT"
}

stop_one() { # stop_one <name>: only ever signals the pid we started
  local name="$1" pidf="$HOME_DIR/$1/$1.pid"
  if ! pid_alive "$pidf"; then rm -f "$pidf"; log "$name not running"; return 0; fi
  local pid; pid="$(cat "$pidf")"
  kill -TERM "$pid" 2>/dev/null || true
  local i; for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$pidf"; log "$name stopped"
}

status_one() {
  local name="$1" pidf="$HOME_DIR/$1/$1.pid"
  if pid_alive "$pidf"; then echo "$name running pid=$(cat "$pidf")"; else echo "$name stopped"; return 1; fi
}

cmd="${1:-status}"; what="${2:-all}"
case "$what" in all) set -- kafka cassandra ;; kafka|cassandra) set -- "$what" ;; *) die "unknown service '$what' (kafka|cassandra|all)";; esac
case "$cmd" in
  up) for s in "$@"; do "${s}_up"; done ;;
  down) for s in "$@"; do stop_one "$s"; done ;;
  status) rc=0; for s in "$@"; do status_one "$s" || rc=1; done; exit $rc ;;
  logs) for s in "$@"; do echo "== $s"; tail -n "${FUSIONREC_LOG_LINES:-40}" "$HOME_DIR/$s/$s.log" 2>/dev/null || echo "(no log)"; done ;;
  fetch) for s in "$@"; do fetch "$s"; done ;;
  *) die "unknown command '$cmd' (up|down|status|logs|fetch)";;
esac
