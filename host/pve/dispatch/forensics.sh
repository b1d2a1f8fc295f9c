#!/bin/sh
# shellcheck shell=sh disable=SC2034,SC2154
# Part of pve-dispatch (sourced): the forensics capture that precedes every mutation.
# --------------------------------------------------------------------------------- forensics
# One section: NAME LIMIT CMD... -> appends a JSON object to $SECTIONS.
section() {
  name=$1 limit=$2; shift 2
  run_capped "$limit" "$@"
  entry=$(printf '{"name":%s,"exit":%s,"timed_out":%s,"duration_ms":%s,"output":%s}' \
    "$(json_of "$name")" "$RC" "$(json_bool "$TIMED_OUT")" "$DURATION_MS" "$(printf '%s' "$OUT" | json_str)")
  SECTIONS="${SECTIONS:+$SECTIONS,}$entry"
}

# qmp_query CMD...: one short-lived QMP client (the socket accepts one client at a time). Our
# side of the connection stays open until every reply has arrived (or socat is gone), so a
# monitor that never answers runs into the section's deadline and is recorded as a timeout,
# and one that closes early is a failure; a healthy one is done in milliseconds.
qmp_query() {
  want=$(($# + 1))
  answered=$(mktemp -u "$state_dir/.qmp.XXXXXX")
  {
    printf '{"execute":"qmp_capabilities"}\n'
    for c in "$@"; do printf '{"execute":"%s"}\n' "$c"; done
    while [ ! -e "$answered" ]; do sleep 0.05; done
  } | {
    "$socat" -t 0.3 - "UNIX-CONNECT:$qmp_socket"
    rc=$?
    : >"$answered"
    exit "$rc"
  } | {
    # sh's read takes a pipe byte by byte, so each reply is seen as it arrives (awk buffers).
    got=0
    while IFS= read -r line || [ -n "$line" ]; do
      printf '%s\n' "$line"
      case $line in '{"return"'* | '{"error"'*)
        got=$((got + 1))
        [ "$got" != "$want" ] || : >"$answered" ;;
      esac
    done
    [ "$got" -ge "$want" ] || { printf 'QMP: %s of %s replies before the connection ended\n' "$got" "$want" >&2; exit 1; }
  }
  rc=$?
  rm -f "$answered"
  return "$rc"
}

lock_file_state() {
  f=$qm_lock_dir/lock-$vmid.conf
  if [ ! -e "$f" ]; then echo "absent: $f"; return 0; fi
  ls -l --time-style=+%Y-%m-%dT%H:%M:%S "$f"
  ino=$(stat -c %i "$f")
  holders=$(grep ":$ino " /proc/locks || true)
  if [ -n "$holders" ]; then printf 'held:\n%s\n' "$holders"; else echo 'not held'; fi
  holder=$(lock_holder_json)
  [ -z "$holder" ] || printf 'holder: %s\n' "$holder"
}

# Every QEMU process of the VM (the status pid and whatever else lives in its scope), thread by
# thread: the threads stuck in D state (I/O workers, iothreads, vCPUs) are the evidence, and a
# zombie main thread does not mean the process is gone.
proc_section() {
  pids=$(printf '%s %s\n' "$1" "$(scope_alive_pids)" | tr ' ' '\n' | awk 'NF && !seen[$0]++')
  [ -n "$pids" ] || { echo 'no QEMU pid (VM not running or status unknown)'; return 1; }
  in_scope=" $(cat "$scope_dir/cgroup.procs" 2>/dev/null | tr '\n' ' ') "
  for pid in $pids; do
    case $in_scope in *" $pid "*) where=yes ;; *) where=no ;; esac
    printf '== process %s (in scope: %s)\n== /proc/%s/status\n' "$pid" "$where" "$pid"
    cat "/proc/$pid/status" 2>&1
    printf '== threads of %s\n' "$pid"
    rows=$(thread_rows "$pid")
    printf '%s\n' "$rows"
    # Kernel stacks of the main thread and of every thread in D state.
    printf '%s\n' "$rows" | awk -v main="$pid" '$1 == main || $2 == "D" { print $1, $2 }' | while read -r tid st; do
      printf '== stack of %s (%s)\n' "$tid" "$st"
      cat "/proc/$pid/task/$tid/stack" 2>&1
    done
  done
}

# The VM's systemd scope: who is left in it and its pressure stall information.
scope_section() {
  if [ ! -d "$scope_dir" ]; then echo "scope: $scope_dir (absent)"; return 0; fi
  printf 'scope: %s\nprocs: %s\n' "$scope_dir" "$(tr '\n' ' ' <"$scope_dir/cgroup.procs" 2>/dev/null | sed 's/ $//')"
  for resource in io cpu memory; do
    printf '== %s.pressure\n' "$resource"
    cat "$scope_dir/$resource.pressure" 2>&1
  done
}

ha_section() {
  if [ -z "$(ha_state)" ]; then echo 'not HA-managed'; return 0; fi
  awk -v id="vm: $vmid" '/^[a-z]+: / { inside = ($0 == id) } inside' "$ha_resources"
}

# capture_forensics TRIGGER: writes $forensics_dir/$REQUEST_ID.json and sets FORENSICS_PATH,
# FORENSICS_SHA256, FORENSICS_MS. Fails (FORENSICS_ERROR says why) unless the document is on disk
# and hashed: no mutating verb may run on the strength of evidence that was not kept.
capture_forensics() {
  trigger=$1
  log_event "event=forensics-start verb=$VERB request=$REQUEST_ID"
  f0=$(now_ms)
  SECTIONS=''
  section 'qm status --verbose' "$section_timeout" "$qm" status "$vmid" --verbose
  qemu_pid=$(field pid "$OUT")
  section 'qm config' "$section_timeout" "$qm" config "$vmid"
  section 'qm config --current' "$section_timeout" "$qm" config "$vmid" --current
  section 'qm pending' "$section_timeout" "$qm" pending "$vmid"
  section 'qmp query-status query-block query-blockstats' "$qmp_timeout" "$0" --section "$CONFIG_FILE" qmp_query query-status query-block query-blockstats
  # Sampled twice: a counter that does not move while QMP answers is the 2026-06-11 signature.
  sleep "$blockstats_interval"
  section 'qmp query-blockstats (second sample)' "$qmp_timeout" "$0" --section "$CONFIG_FILE" qmp_query query-blockstats
  section 'guest agent ping' "$section_timeout" "$qm" guest cmd "$vmid" ping
  section 'guest agent info' "$section_timeout" "$qm" guest cmd "$vmid" info
  section 'qemu process' "$section_timeout" "$0" --section "$CONFIG_FILE" proc_section "$qemu_pid"
  section 'vm scope' "$section_timeout" "$0" --section "$CONFIG_FILE" scope_section
  section 'ha resource' "$section_timeout" "$0" --section "$CONFIG_FILE" ha_section
  section 'host dmesg tail' "$section_timeout" "$0" --section "$CONFIG_FILE" dmesg_tail
  section 'qm lock file' "$section_timeout" "$0" --section "$CONFIG_FILE" lock_file_state
  # The guest kernel's own words (hung tasks, OOM kills) when neither SSH nor the agent answers.
  [ -z "$console_log" ] || section 'guest console tail' "$section_timeout" tail -n "$dmesg_lines" "$console_log"
  FORENSICS_PATH=$forensics_dir/$REQUEST_ID.json FORENSICS_SHA256='' FORENSICS_ERROR=''
  if ! FORENSICS_ERROR=$({
    mkdir -p "$forensics_dir" &&
      printf '{"vmid":%s,"request_id":"%s","trigger":"%s","captured_at":"%s","host":%s,"blockstats_interval_s":%s,"sections":[%s]}\n' \
        "$vmid" "$REQUEST_ID" "$trigger" "$(now_iso)" "$(json_of "$(hostname)")" "$blockstats_interval" "$SECTIONS" >"$FORENSICS_PATH.tmp" &&
      mv -T "$FORENSICS_PATH.tmp" "$FORENSICS_PATH"
  } 2>&1); then
    FORENSICS_ERROR=$(printf '%s' "${FORENSICS_ERROR:-could not write the document}" | tr '\n' ' ')
  elif [ -f "$FORENSICS_PATH" ] && [ -s "$FORENSICS_PATH" ]; then
    FORENSICS_SHA256=$(sha256sum "$FORENSICS_PATH" 2>/dev/null | cut -d' ' -f1)
  fi
  FORENSICS_MS=$(($(now_ms) - f0))
  if [ -z "$FORENSICS_SHA256" ]; then
    rm -f "$FORENSICS_PATH.tmp" 2>/dev/null
    FORENSICS_ERROR="forensics could not be saved to $FORENSICS_PATH: ${FORENSICS_ERROR:-the document is missing or empty after writing}"
    log_event "event=forensics-failed verb=$VERB request=$REQUEST_ID ms=$FORENSICS_MS"
    return 1
  fi
  log_event "event=forensics-done verb=$VERB request=$REQUEST_ID sha256=$FORENSICS_SHA256 ms=$FORENSICS_MS"
}
dmesg_tail() { dmesg -T 2>&1 | tail -n "$dmesg_lines"; }

forensics_json() {
  printf '{"path":%s,"sha256":"%s","duration_ms":%s}' "$(json_of "$FORENSICS_PATH")" "$FORENSICS_SHA256" "$FORENSICS_MS"
}

