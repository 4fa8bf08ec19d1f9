# Sourced by services.sh, secure.sh and cluster.sh (needs their log and die): the timer slack that
# the local Kafka brokers and Cassandra nodes run with.
#
# A node's request stages (Cassandra's shared executor pool) spin in 10-microsecond sleeps after each
# request before they park, and on a small host those wake-ups cost more than the request: here an
# isolated read took the node about 10 ms of CPU, and the bench's poller alone (36 small reads a
# second) kept 0.4 of a core busy. A timer slack, which every JVM thread inherits, lets the kernel
# coalesce those sleeps: at 200 us the poller cost 0.2 of a core, and at 2,000 events/s on 2 cores
# the worker shed its ranking stage from 31% of lists instead of 63%. A request waits at most the
# slack longer for a spinning thread. The broker's threads wake as often under a steady stream (0.28
# of a core at 1,000 messages/s, 0.20 with the slack), and from a cold start at 1,000 events/s the
# worker reached its first batch 0.92-1.00 s after its launch instead of 0.99-1.33 s.
# FUSIONREC_CASSANDRA_TIMER_SLACK_US / FUSIONREC_KAFKA_TIMER_SLACK_US=0 keep the kernel's 50 us.
CASSANDRA_TIMER_SLACK_US="${FUSIONREC_CASSANDRA_TIMER_SLACK_US:-200}"
KAFKA_TIMER_SLACK_US="${FUSIONREC_KAFKA_TIMER_SLACK_US:-200}"

check_timer_slack() { # check_timer_slack <NAME>: FUSIONREC_<NAME> is a whole number of microseconds
  local value="${!1}"
  [[ "$value" =~ ^[0-9]{1,7}$ ]] \
    || die "FUSIONREC_$1 must be a whole number of microseconds up to 9999999 (0: the kernel's default), not '$value'"
}

with_timer_slack() { # with_timer_slack <microseconds> <command...>: exec the command with that timer slack
  local us="$1"; shift
  if [[ "$us" != 0 ]]; then
    # a builtin's redirection: /proc/self is this (sub)shell, whose slack the exec'd command keeps
    echo $((10#$us * 1000)) 2>/dev/null > /proc/self/timerslack_ns \
      || log "could not set a timer slack of ${us} us (no /proc/self/timerslack_ns): the kernel's default stays"
  fi
  exec "$@"
}
