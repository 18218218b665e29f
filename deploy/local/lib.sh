# SPDX-License-Identifier: Apache-2.0
# Shell functions shared by deploy/install, deploy/local/* and tests/run:
# logging, process control by PID file (never by name), readiness polling,
# the CMake build step and the project's Kafka topic list. Source it; it
# defines FG_ROOT, the repository root, from its own location.
# shellcheck shell=bash

FG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# fg_say MSG...: a progress line on stderr, prefixed with the calling script.
fg_say() {
    printf '%s: %s\n' "${FG_SCRIPT:-fleetgate}" "$*" >&2
}

# fg_die MSG...: print and exit 1.
fg_die() {
    fg_say "error: $*"
    exit 1
}

# fg_pid_alive PIDFILE [PATTERN]: true when PIDFILE names a live, non-zombie
# process whose command line contains PATTERN (guards against PID reuse).
# Prints the PID on success.
fg_pid_alive() {
    local pidfile="$1" pattern="${2:-}" pid state
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/stat" ]] || return 1
    # Field 3 of /proc/PID/stat is the state; the command name before it may
    # contain spaces, so cut after the closing parenthesis.
    state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ "$state" != "Z" && -n "$state" ]] || return 1
    if [[ -n "$pattern" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
    fi
    printf '%s\n' "$pid"
}

# fg_spawn PIDFILE LOGFILE CMD...: starts CMD in its own session (setsid, so
# it outlives the calling script and its terminal), stdin from /dev/null,
# stdout and stderr appended to LOGFILE. The PID written to PIDFILE is the
# PID of CMD itself: the wrapper shell records $$ and then execs CMD.
fg_spawn() {
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016 # $$ and "$@" expand in the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
        </dev/null >>"$logfile" 2>&1 &
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.02
    done
    fg_die "could not start $1 (no PID written to $pidfile)"
}

# fg_stop_pidfile PIDFILE PATTERN NAME [TIMEOUT]: SIGTERM the process named by
# PIDFILE (after SIGCONT, in case a fault test stopped it), wait up to
# TIMEOUT seconds (default 30), then SIGKILL. Removes PIDFILE. Succeeds when
# nothing was running.
fg_stop_pidfile() {
    local pidfile="$1" pattern="$2" name="$3" timeout="${4:-30}" pid i
    if ! pid="$(fg_pid_alive "$pidfile" "$pattern")"; then
        rm -f "$pidfile"
        fg_say "$name is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        fg_pid_alive "$pidfile" "$pattern" >/dev/null || break
        sleep 0.1
    done
    if fg_pid_alive "$pidfile" "$pattern" >/dev/null; then
        fg_say "$name (pid $pid) did not stop within ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            fg_pid_alive "$pidfile" "$pattern" >/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
    fg_say "$name stopped (pid $pid)"
}

# fg_port_free PORT: true when nothing accepts connections on 127.0.0.1:PORT
# (so a readiness probe cannot be answered by somebody else's server).
fg_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# fg_wait_ready TIMEOUT PIDFILE PATTERN LOGFILE NAME CMD...: polls CMD every
# 0.2 s until it succeeds. Fails, printing the tail of LOGFILE, when the
# process behind PIDFILE dies or TIMEOUT seconds pass.
fg_wait_ready() {
    local timeout="$1" pidfile="$2" pattern="$3" logfile="$4" name="$5"
    shift 5
    local deadline=$((SECONDS + timeout))
    while true; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ! fg_pid_alive "$pidfile" "$pattern" >/dev/null; then
            fg_say "$name exited during start-up; last lines of $logfile:"
            tail -n 40 "$logfile" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            fg_say "$name not ready after ${timeout}s; last lines of $logfile:"
            tail -n 40 "$logfile" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# fg_cmake_build BUILDDIR [CMAKE ARGS...]: configures (Ninja) and builds.
# A build directory configured with another generator is wiped first, since
# CMake refuses to switch generators in place.
fg_cmake_build() {
    local dir="$1"
    shift
    if [[ -f "$dir/CMakeCache.txt" ]] &&
        ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
        fg_say "$dir was configured with another generator: wiping it"
        rm -rf "$dir"
    fi
    cmake -S "$FG_ROOT" -B "$dir" -G Ninja "$@" >/dev/null &&
        cmake --build "$dir" -j "$(nproc)"
}

# The topics of the local stack and the test broker: name, partitions,
# then topic configs.
FG_TOPICS=(
    "fleet.checkins 6"
    "fleet.region-locks 1 cleanup.policy=compact"
    "fleet.checkins.dlq 1"
    "fleet.region-scores 3 cleanup.policy=compact"
    "fleet.audit 1"
)

# fg_create_topics FG_TOPICS_BIN BOOTSTRAP: creates every topic of FG_TOPICS
# (existing ones are left as they are).
fg_create_topics() {
    local bin="$1" bootstrap="$2" line name parts cfg
    local -a args words
    for line in "${FG_TOPICS[@]}"; do
        read -r -a words <<<"$line"
        name="${words[0]}"
        parts="${words[1]}"
        args=()
        for cfg in "${words[@]:2}"; do
            args+=(--config "$cfg")
        done
        "$bin" -b "$bootstrap" create "$name" --partitions "$parts" "${args[@]}" ||
            fg_die "could not create topic $name"
    done
}
