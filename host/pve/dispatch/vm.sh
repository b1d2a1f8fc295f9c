#!/bin/sh
# shellcheck shell=sh disable=SC2034,SC2154
# Part of pve-dispatch (sourced): reading the VM through qm, /proc and its systemd scope.
# ------------------------------------------------------------------------- reading the VM
# run_capped SECONDS CMD...: bounded run on the host itself. Sets OUT (combined output, capped
# so a runaway command cannot fill memory or the journal), RC, TIMED_OUT and DURATION_MS.
run_capped() {
  limit=$1; shift
  t0=$(now_ms)
  tmp=$(mktemp "$state_dir/.out.XXXXXX")
  # 9>&-: the lock fd stays with the dispatcher; a daemonising child (qm start's QEMU) would
  # otherwise inherit it and hold the dispatcher's lock for as long as the VM runs.
  timeout -k 2 "$limit" "$@" >"$tmp" 2>&1 9>&-
  RC=$?
  DURATION_MS=$(($(now_ms) - t0))
  OUT=$(head -c 262144 "$tmp")
  rm -f "$tmp"
  TIMED_OUT=0
  case $RC in 124 | 137) TIMED_OUT=1 ;; esac
}

field() { printf '%s\n' "$2" | sed -n "s/^$1: //p" | head -n 1; }

# read_vm PREFIX: qm status --verbose + qm pending into ${PREFIX}_status, _qmpstatus, _pid,
# _uptime, _lock, _pending (the `new`/`del` lines), _error, plus what qm does not say:
# _qmp (answered/silent: a silent QMP leaves qmpstatus as a copy of status, but no
# running-qemu line), _ha (the HA resource's state, empty when not HA-managed) and _scope
# (live processes in the VM's systemd scope).
read_vm() {
  p=$1
  run_capped "$status_timeout" "$qm" status "$vmid" --verbose
  if [ "$RC" = 0 ]; then
    eval "${p}_status=\$(field status \"\$OUT\") ${p}_qmpstatus=\$(field qmpstatus \"\$OUT\")"
    eval "${p}_pid=\$(field pid \"\$OUT\") ${p}_uptime=\$(field uptime \"\$OUT\") ${p}_lock=\$(field lock \"\$OUT\")"
    qmp_seen=''
    if [ "$(field status "$OUT")" = running ]; then
      qmp_seen=silent
      [ -z "$(field running-qemu "$OUT")" ] || qmp_seen=answered
    fi
    eval "${p}_error='' ${p}_qmp=\$qmp_seen"
  else
    READ_ERROR=$OUT; [ "$TIMED_OUT" = 1 ] && READ_ERROR="qm status timed out after ${status_timeout}s"
    eval "${p}_status=unknown ${p}_qmpstatus='' ${p}_pid='' ${p}_uptime='' ${p}_lock='' ${p}_qmp='' ${p}_error=\$READ_ERROR"
  fi
  run_capped "$status_timeout" "$qm" pending "$vmid"
  if [ "$RC" = 0 ]; then
    eval "${p}_pending=\$(printf '%s\n' \"\$OUT\" | grep -E '^(new|del) ' || true)"
  else
    eval "${p}_pending=''"
  fi
  eval "${p}_ha=\$(ha_state) ${p}_scope=\$(scope_alive_pids)"
}

vm_json() {
  p=$1
  eval "s=\$${p}_status q=\$${p}_qmpstatus pid=\$${p}_pid up=\$${p}_uptime lk=\$${p}_lock pend=\$${p}_pending err=\$${p}_error"
  eval "qmp_seen=\$${p}_qmp ha=\$${p}_ha scope=\$${p}_scope"
  present=0; [ -n "$pend" ] && present=1
  printf '{"status":%s,"qmpstatus":%s,"pid":%s,"uptime":%s,"lock":%s,"pending":{"present":%s,"lines":%s}' \
    "$(json_of "$s")" "$(json_of "$q")" "$(json_num_or_null "$pid")" "$(json_num_or_null "$up")" \
    "$(json_of "$lk")" "$(json_bool $present)" "$(printf '%s\n' "$pend" | json_lines)"
  if [ -n "$qmp_seen" ]; then printf ',"qmp":"%s"' "$qmp_seen"; else printf ',"qmp":null'; fi
  if [ -n "$ha" ]; then printf ',"ha":{"managed":true,"state":%s}' "$(json_of "$ha")"; else printf ',"ha":null'; fi
  printf ',"scope_pids":[%s]' "$(printf '%s' "$scope" | tr ' ' ',')"
  if [ "$s" = stopped ] && [ -n "$scope" ]; then
    printf ',"warning":%s' "$(json_of "qm says stopped, but QEMU processes remain in the VM's scope: $scope")"
  fi
  [ -n "$err" ] && printf ',"error":%s' "$(json_of "$err")"
  printf '}'
}

# ------------------------------------------------------------------ processes and the scope
proc_state() { sed -n 's/^State:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null; }

# A process is alive while any of its threads is: QEMU's main thread can be a zombie while a
# thread stuck in D state keeps running and keeps the disk open.
qemu_alive() {
  [ -n "$1" ] && [ -d "/proc/$1/task" ] || return 1
  for task in "/proc/$1/task"/*; do
    case $(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "$task/status" 2>/dev/null) in '' | Z | X) ;; *) return 0 ;; esac
  done
  return 1
}
# pid_alive: the dispatcher's own processes (journal runners), which are single-threaded.
pid_alive() { qemu_alive "$1"; }

# Live processes in the VM's systemd scope, space-separated (empty without a scope).
scope_alive_pids() {
  [ -r "$scope_dir/cgroup.procs" ] || return 0
  alive=''
  for sp in $(cat "$scope_dir/cgroup.procs" 2>/dev/null); do
    qemu_alive "$sp" && alive="${alive:+$alive }$sp"
  done
  printf '%s' "$alive"
}

# thread_rows PID: "TID STATE WCHAN COMM" per thread (at most 128).
thread_rows() {
  for task in "/proc/$1/task"/*; do
    [ -d "$task" ] || continue
    st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "$task/status" 2>/dev/null)
    [ -n "$st" ] || continue
    wchan=$(cat "$task/wchan" 2>/dev/null); [ -n "$wchan" ] || wchan=-
    printf '%s %s %s %s\n' "${task##*/}" "$st" "$wchan" "$(cat "$task/comm" 2>/dev/null)"
  done | head -n 128
}

# survivors_json PID...: the given processes that are still alive, each with its threads.
survivors_json() {
  first=1
  printf '['
  for sp in "$@"; do
    qemu_alive "$sp" || continue
    in_scope=false
    case " $(cat "$scope_dir/cgroup.procs" 2>/dev/null | tr '\n' ' ') " in *" $sp "*) in_scope=true ;; esac
    [ "$first" = 1 ] || printf ','
    first=0
    printf '{"pid":%s,"leader_state":%s,"in_scope":%s,"threads":[' "$sp" "$(json_of "$(proc_state "$sp")")" "$in_scope"
    thread_rows "$sp" | awk '{ comm = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", comm); gsub(/\\/, "\\\\", comm); gsub(/"/, "\\\"", comm)
      printf "%s{\"tid\":%s,\"state\":\"%s\",\"wchan\":\"%s\",\"comm\":\"%s\"}", (n++ ? "," : ""), $1, $2, $3, comm }'
    printf ']}'
  done
  printf ']'
}

# survivor_summary PID...: one line per live process, e.g. "pid 1234: main thread Z, 1 of 2 threads in D".
survivor_summary() {
  for sp in "$@"; do
    qemu_alive "$sp" || continue
    rows=$(thread_rows "$sp")
    printf 'pid %s: main thread %s, %s of %s threads in D; ' "$sp" "$(proc_state "$sp" | cut -c1)" \
      "$(printf '%s\n' "$rows" | awk '$2 == "D"' | wc -l)" "$(printf '%s\n' "$rows" | grep -c .)"
  done | sed 's/; $//'
}

# ---------------------------------------------------------------------------- HA and locks
# The VM's HA resource state from resources.cfg (e.g. "started"), empty when not HA-managed.
ha_state() {
  [ -r "$ha_resources" ] || return 0
  awk -v id="vm: $vmid" '
    /^[a-z]+: / { inside = ($0 == id); if (inside) { found = 1; state = "started" } next }
    inside && $1 == "state" { state = $2 }
    END { if (found) print state }' "$ha_resources"
}

# The process holding lock-<vmid>.conf and the Proxmox task it belongs to: /proc/locks names
# the holder; qm's task workers call themselves "task UPID:…", so the holder or one of its
# parents says which task. Prints a JSON object, or nothing when the lock is free.
lock_holder_json() {
  f=$qm_lock_dir/lock-$vmid.conf
  [ -e "$f" ] || return 0
  ino=$(stat -c %i "$f")
  holder=$(awk -v ino=":$ino" '$2 != "->" && index($6, ino) && substr($6, length($6) - length(ino) + 1) == ino { print $5; exit }' /proc/locks)
  [ -n "$holder" ] || return 0
  task='' hp=$holder
  for _ in 1 2 3 4 5 6; do
    cmd=$(tr '\0' ' ' <"/proc/$hp/cmdline" 2>/dev/null)
    case $cmd in 'task UPID:'*) task=${cmd#task }; task=${task%% *}; break ;; esac
    hp=$(awk '/^PPid:/ { print $2 }' "/proc/$hp/status" 2>/dev/null)
    case $hp in '' | 0 | 1) break ;; esac
  done
  printf '{"pid":%s,"task":%s,"cmdline":%s}' "$holder" \
    "$( [ -n "$task" ] && json_of "$task" || printf null)" "$(json_of "$(tr '\0' ' ' <"/proc/$holder/cmdline" 2>/dev/null | head -c 200)")"
}
