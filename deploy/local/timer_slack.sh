# Sourced by services.sh, secure.sh and cluster.sh (needs their log and die): the timer slack that
# the local Cassandra nodes run with.
#
# A node's request stages (Cassandra's shared executor pool) spin in 10-microsecond sleeps after each
# request before they park, and on a small host those wake-ups cost more than the request: here an
# isolated read took the node about 10 ms of CPU, and the bench's poller alone (36 small reads a
# second) kept 0.4 of a core busy. A timer slack, which every JVM thread inherits, lets the kernel
# coalesce those sleeps: at 200 us the poller cost 0.2 of a core, and at 2,000 events/s on 2 cores
# the worker shed its ranking stage from 31% of lists instead of 63%. A request waits at most the
# slack longer for a spinning thread. FUSIONREC_CASSANDRA_TIMER_SLACK_US=0 keeps the kernel's 50 us.
CASSANDRA_TIMER_SLACK_US="${FUSIONREC_CASSANDRA_TIMER_SLACK_US:-200}"

check_timer_slack() {
  [[ "$CASSANDRA_TIMER_SLACK_US" =~ ^[0-9]{1,7}$ ]] \
    || die "FUSIONREC_CASSANDRA_TIMER_SLACK_US must be a whole number of microseconds up to 9999999 (0: the kernel's default), not '$CASSANDRA_TIMER_SLACK_US'"
}

with_timer_slack() { # with_timer_slack <command...>: exec the command with CASSANDRA_TIMER_SLACK_US
  if [[ "$CASSANDRA_TIMER_SLACK_US" != 0 ]]; then
    # a builtin's redirection: /proc/self is this (sub)shell, whose slack the exec'd command keeps
    echo $((10#$CASSANDRA_TIMER_SLACK_US * 1000)) 2>/dev/null > /proc/self/timerslack_ns \
      || log "could not set a timer slack of ${CASSANDRA_TIMER_SLACK_US} us (no /proc/self/timerslack_ns): the kernel's default stays"
  fi
  exec "$@"
}
