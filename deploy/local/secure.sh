#!/usr/bin/env bash
# Local SECURE Kafka + Cassandra, beside the plain ones of services.sh (own ports, data, names):
#   Kafka 3.9 KRaft, one SASL_SSL listener (SCRAM-SHA-512 users, TLS with client certificates required)
#   on 127.0.0.1:19092 (controller 19093, PLAINTEXT on loopback);
#   Cassandra 5.0 with PasswordAuthenticator and client TLS required on 127.0.0.1:19042.
# A throwaway CA and certificates (fusionrec.localcerts, needs `cryptography`) and random passwords are
# made on the first `up` under $FUSIONREC_SECURE_HOME (default <repo>/.local/secure, mode 700), and the
# matching settings written to fusionrec.secure.toml (gitignored, mode 600): use them with
#   FUSIONREC_CONFIG=fusionrec.secure.toml fusionrec worker ...
# Usage: secure.sh up|down|status|logs [kafka|cassandra|all] | wipe
# Jars: the ones services.sh fetched (fetched through it when missing). Only signals processes it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
JARS_HOME="${FUSIONREC_SERVICES_HOME:-$REPO/.local}"
SEC="${FUSIONREC_SECURE_HOME:-$REPO/.local/secure}"
TOML="${FUSIONREC_SECURE_TOML:-$REPO/fusionrec.secure.toml}"
PY="${FUSIONREC_PYTHON:-$REPO/.venv/bin/python}"
KAFKA_PORT="${FUSIONREC_SECURE_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${FUSIONREC_SECURE_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${FUSIONREC_SECURE_KAFKA_HEAP:-384m}"
CASSANDRA_PORT="${FUSIONREC_SECURE_CASSANDRA_PORT:-19042}"
CASSANDRA_STORAGE_PORT="${FUSIONREC_SECURE_CASSANDRA_STORAGE_PORT:-17000}"
CASSANDRA_JMX_PORT="${FUSIONREC_SECURE_CASSANDRA_JMX_PORT:-17199}"
CASSANDRA_HEAP="${FUSIONREC_SECURE_CASSANDRA_HEAP:-768m}"
KAFKA_TIMEOUT="${FUSIONREC_KAFKA_START_TIMEOUT:-120}"
CASSANDRA_TIMEOUT="${FUSIONREC_CASSANDRA_START_TIMEOUT:-240}"
CERTS="$SEC/certs"
APP_USER=fusionrec

log() { printf 'secure: %s\n' "$*" >&2; }
die() { printf 'secure: error: %s\n' "$*" >&2; exit 1; }
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

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

jars() { # jars <name>: the lib folder services.sh fills, filled through it once
  [[ -f "$JARS_HOME/$1/lib/.complete" ]] || bash "$HERE/services.sh" fetch "$1" >&2
  echo "$JARS_HOME/$1/lib"
}

secrets() { # random passwords and the certificates, once; later runs reuse them (clients trust this CA)
  umask 077
  mkdir -p "$SEC" "$CERTS"
  chmod 700 "$SEC"
  [[ -x "$PY" ]] || die "no Python at $PY (set FUSIONREC_PYTHON to one with fusionrec's dev extra)"
  if [[ ! -f "$SEC/secrets.env" ]]; then
    local names=(KEYSTORE_PASSWORD KAFKA_ADMIN_PASSWORD KAFKA_APP_PASSWORD CASSANDRA_ADMIN_PASSWORD CASSANDRA_APP_PASSWORD)
    "$PY" -c 'import secrets, sys; print("\n".join(f"{n}={secrets.token_hex(16)}" for n in sys.argv[1:]))' \
      "${names[@]}" > "$SEC/secrets.env.tmp"
    mv "$SEC/secrets.env.tmp" "$SEC/secrets.env"
  fi
  # shellcheck disable=SC1091
  source "$SEC/secrets.env"
  FUSIONREC_KEYSTORE_PASSWORD="$KEYSTORE_PASSWORD" "$PY" -m fusionrec.localcerts "$CERTS" >&2 \
    || die "could not make the certificates (is \`cryptography\` installed? pip install -e '.[dev]')"
}

write_toml() {
  umask 077
  cat > "$TOML.tmp" <<TOML
# Written by deploy/local/secure.sh up: the local secure services (throwaway CA and passwords, in
# $SEC). Use it with FUSIONREC_CONFIG=fusionrec.secure.toml. Gitignored: it holds passwords.

[kafka]
bootstrap = "127.0.0.1:$KAFKA_PORT"
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
username = "$APP_USER"
password = "$KAFKA_APP_PASSWORD"
ssl_ca_file = "$CERTS/ca.pem"
ssl_cert_file = "$CERTS/client.pem"
ssl_key_file = "$CERTS/client.key"

[cassandra]
hosts = ["127.0.0.1"]
port = $CASSANDRA_PORT
username = "$APP_USER"
password = "$CASSANDRA_APP_PASSWORD"
ssl_ca_file = "$CERTS/ca.pem"
TOML
  mv "$TOML.tmp" "$TOML"
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
  local dir="$SEC/kafka" pidf="$SEC/kafka/kafka.pid" logf="$SEC/kafka/kafka.log"
  if pid_alive "$pidf"; then log "kafka already running (pid $(cat "$pidf")) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  port_busy "$KAFKA_PORT" && die "port $KAFKA_PORT is busy but not by our secure Kafka; set FUSIONREC_SECURE_KAFKA_PORT"
  port_busy "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is busy; set FUSIONREC_SECURE_KAFKA_CONTROLLER_PORT"
  local lib; lib="$(jars kafka)"
  check_timer_slack KAFKA_TIMER_SLACK_US
  local java; java="$(find_java17)"
  umask 077
  mkdir -p "$dir/data" "$dir/tmp"
  # the broker logs its config with every password [hidden]; the file itself is mode 600
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
ssl.keystore.type=PKCS12
ssl.keystore.location=$CERTS/server.p12
ssl.keystore.password=$KEYSTORE_PASSWORD
ssl.key.password=$KEYSTORE_PASSWORD
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.pem
# mTLS on a SASL_SSL listener needs the listener prefix (KIP-684); unprefixed it is ignored there
listener.name.sasl_ssl.ssl.client.auth=required
ssl.endpoint.identification.algorithm=https
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
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
  local cp="$lib/*"
  local jopts=(-Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
    -Dlog4j.configuration="file:$dir/log4j.properties"
    -Djava.io.tmpdir="$dir/tmp" -Dorg.xerial.snappy.tempdir="$dir/tmp" -DZstdTempFolder="$dir/tmp")
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    # SCRAM users exist from the first start (KRaft stores them in the metadata log); the broker's own
    # login (admin) and the application's. The passwords pass through argv of this one short process.
    local cid; cid="$("$java" -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    "$java" -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$APP_USER,password=$KAFKA_APP_PASSWORD]" \
      > "$dir/format.log" 2>&1 || { tail -20 "$dir/format.log" >&2; die "kafka storage format failed"; }
  fi
  [[ -f "$logf" ]] && mv -f "$logf" "$logf.1"
  log "starting secure kafka (SASL_SSL) on 127.0.0.1:$KAFKA_PORT (log: $logf)"
  (with_timer_slack "$KAFKA_TIMER_SLACK_US" nohup "$java" -cp "$cp" "${jopts[@]}" kafka.Kafka "$dir/server.properties" \
    >> "$logf" 2>&1) &
  echo $! > "$pidf"
  wait_ready kafka "$KAFKA_TIMEOUT" "$pidf" "$logf" kafka_ready || die "secure kafka failed to start"
}

kafka_ready() { grep -q "Kafka Server started" "$SEC/kafka/kafka.log" && port_busy "$KAFKA_PORT"; }

cassandra_up() {
  local dir="$SEC/cassandra" pidf="$SEC/cassandra/cassandra.pid" logf="$SEC/cassandra/cassandra.log"
  if pid_alive "$pidf"; then log "cassandra already running (pid $(cat "$pidf")) on 127.0.0.1:$CASSANDRA_PORT"; return 0; fi
  port_busy "$CASSANDRA_PORT" && die "port $CASSANDRA_PORT is busy but not by our secure Cassandra; set FUSIONREC_SECURE_CASSANDRA_PORT"
  port_busy "$CASSANDRA_STORAGE_PORT" && die "port $CASSANDRA_STORAGE_PORT is busy; set FUSIONREC_SECURE_CASSANDRA_STORAGE_PORT"
  local lib; lib="$(jars cassandra)"
  check_timer_slack CASSANDRA_TIMER_SLACK_US
  local java; java="$(find_java17)"
  umask 077
  mkdir -p "$dir/data" "$dir/conf" "$dir/logs" "$dir/tmp"
  cat > "$dir/conf/cassandra.yaml" <<YAML
cluster_name: fusionrec-secure
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
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 128KiB
hinted_handoff_enabled: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
read_request_timeout: 10000ms
write_request_timeout: 10000ms
authenticator: PasswordAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
client_encryption_options:
  enabled: true
  optional: false
  keystore: $CERTS/server.p12
  keystore_password: $KEYSTORE_PASSWORD
  store_type: PKCS12
  require_client_auth: false
YAML
  cat > "$dir/conf/logback.xml" <<XML
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
XML
  local jamm; jamm="$(ls "$lib"/jamm-*.jar | head -1)"
  local jopts=(-javaagent:"$jamm" -XX:+ExitOnOutOfMemoryError -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -ea -da:net.openhft... -Xss256k
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:MaxGCPauseMillis=300
    -Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true
    -Djava.net.preferIPv4Stack=true
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" -Dcassandra.storagedir="$dir/data"
    -Dcassandra.logdir="$dir/logs" -Dlogback.configurationFile="$dir/conf/logback.xml"
    -Dcassandra-foreground=yes -Dcassandra.jmx.local.port="$CASSANDRA_JMX_PORT"
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dchronicle.analytics.disable=true
    -Dcassandra.ring_delay_ms=100 -Dcassandra.superuser_setup_delay_ms=0
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
  [[ -f "$logf" ]] && mv -f "$logf" "$logf.1"
  log "starting secure cassandra (password + TLS) on 127.0.0.1:$CASSANDRA_PORT (log: $logf)"
  (with_timer_slack "$CASSANDRA_TIMER_SLACK_US" nohup "$java" "${jopts[@]}" -cp "$dir/conf:$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >> "$logf" 2>&1) &
  echo $! > "$pidf"
  wait_ready cassandra "$CASSANDRA_TIMEOUT" "$pidf" "$logf" cassandra_ready || die "secure cassandra failed to start"
  # the roles: an admin superuser and the application's login; the default cassandra/cassandra loses its
  # login. Passwords pass in the environment of this one process, never argv.
  CASSANDRA_PORT="$CASSANDRA_PORT" CA_FILE="$CERTS/ca.pem" APP_USER="$APP_USER" \
    CASSANDRA_ADMIN_PASSWORD="$CASSANDRA_ADMIN_PASSWORD" CASSANDRA_APP_PASSWORD="$CASSANDRA_APP_PASSWORD" \
    "$PY" "$HERE/cassandra_roles.py" >&2 || die "could not set up the Cassandra roles (log: $logf)"
}

cassandra_ready() { grep -q "Starting listening for CQL clients" "$SEC/cassandra/cassandra.log" && port_busy "$CASSANDRA_PORT"; }

stop_one() { # stop_one <name>: only ever signals the pid we started
  local name="$1" pidf="$SEC/$1/$1.pid"
  if ! pid_alive "$pidf"; then rm -f "$pidf"; log "$name not running"; return 0; fi
  local pid; pid="$(cat "$pidf")"
  kill -TERM "$pid" 2>/dev/null || true
  local i; for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
  rm -f "$pidf"; log "secure $name stopped"
}

status_one() {
  local name="$1" pidf="$SEC/$1/$1.pid"
  if pid_alive "$pidf"; then echo "secure $name running pid=$(cat "$pidf")"; else echo "secure $name stopped"; return 1; fi
}

cmd="${1:-status}"; what="${2:-all}"
case "$what" in all) set -- kafka cassandra ;; kafka|cassandra) set -- "$what" ;; *) die "unknown service '$what' (kafka|cassandra|all)";; esac
case "$cmd" in
  up) secrets; for s in "$@"; do "${s}_up"; done; write_toml; log "settings for these services: $TOML" ;;
  down) for s in "$@"; do stop_one "$s"; done ;;
  status) rc=0; for s in "$@"; do status_one "$s" || rc=1; done; exit $rc ;;
  logs) for s in "$@"; do echo "== secure $s"; tail -n "${FUSIONREC_LOG_LINES:-40}" "$SEC/$s/$s.log" 2>/dev/null || echo "(no log)"; done ;;
  wipe) for s in kafka cassandra; do pid_alive "$SEC/$s/$s.pid" && die "secure $s is running: secure.sh down first"; done
        rm -rf "$SEC" "$TOML"; log "secure data, certificates and $TOML removed" ;;
  *) die "unknown command '$cmd' (up|down|status|logs|wipe)";;
esac
