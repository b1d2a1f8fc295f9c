#!/bin/sh
# shellcheck shell=sh disable=SC2034,SC2154
# Part of pve-dispatch (sourced): the verbs, each verifying what qm claims.
# ------------------------------------------------------------------------------- the verbs
# Each writes the result document to stdout and returns 0 (ok) or 1 (failed).
step_json() {
  STEPS="${STEPS:+$STEPS,}$(printf '{"name":%s,"exit":%s,"timed_out":%s,"duration_ms":%s,"output":%s}' \
    "$(json_of "$1")" "$RC" "$(json_bool "$TIMED_OUT")" "$DURATION_MS" "$(printf '%s' "$OUT" | json_str)")"
}

run_step() { # NAME LIMIT CMD...
  name=$1 limit=$2; shift 2
  log_event "event=verb-step verb=$VERB request=$REQUEST_ID step=\"$name\""
  run_capped "$limit" "$@"
  step_json "$name"
  log_event "event=verb-step-done verb=$VERB request=$REQUEST_ID step=\"$name\" exit=$RC timed_out=$TIMED_OUT ms=$DURATION_MS"
  [ "$RC" = 0 ]
}

# check OK(0|1) WHAT [DETAIL]: one thing the host verified, for the result's "checks".
check() {
  CHECKS="${CHECKS:+$CHECKS,}$(printf '{"check":%s,"ok":%s' "$(json_of "$2")" "$(json_bool "$1")")"
  [ -z "${3:-}" ] || CHECKS="$CHECKS,\"detail\":$(json_of "$3")"
  CHECKS="$CHECKS}"
}
# The first reason a verb failed is the one a person needs.
fail_reason() { [ -n "$REASON" ] || REASON=$1; }

# After a failed run_step: why, naming the task that holds the VM's config lock when there is
# one (a qm worker outlives `timeout`: it calls setsid, and only the front process is killed).
step_failure() {
  name=$1
  LOCK_HOLDER=$(lock_holder_json)
  holder_task=$(printf '%s' "$LOCK_HOLDER" | sed -n 's/.*"task":"\([^"]*\)".*/\1/p')
  holder_name=${holder_task:-process $(printf '%s' "$LOCK_HOLDER" | sed -n 's/^{"pid":\([0-9]*\).*/\1/p')}
  if [ "$TIMED_OUT" = 1 ]; then
    why="$name did not finish within ${limit} s"
    [ -z "$LOCK_HOLDER" ] || why="$why; $holder_name still holds the VM's config lock, so the next verb waits for it"
  else
    why="$name failed: $(printf '%s\n' "$OUT" | grep -v '^[[:space:]]*$' | tail -n 1)"
    case $OUT in *"can't lock file"*) [ -z "$LOCK_HOLDER" ] || why="$why (the lock is held by $holder_name)" ;; esac
  fi
  fail_reason "$why"
}

# wait_for_status WANT SECONDS: asks qm until the VM is WANT (running/stopped) or time is up.
# Sets SEEN and WAITED_S.
wait_for_status() {
  want=$1 wait_limit=$2 w0=$(now_ms)
  while :; do
    run_capped "$status_timeout" "$qm" status "$vmid"
    SEEN=$(field status "$OUT")
    WAITED_S=$((($(now_ms) - w0) / 1000))
    [ "$SEEN" != "$want" ] || return 0
    [ "$WAITED_S" -lt "$wait_limit" ] || return 1
    sleep 2
  done
}

# An HA-managed VM's qm stop/start only asks the HA manager (exit 0 at once); the state changes
# later, or not at all. ha_follow WANT VERB waits for it and records what happened.
ha_follow() {
  want=$1 word=$2 requested=stopped
  [ "$want" = stopped ] || requested=started
  if wait_for_status "$want" "$ha_wait"; then
    ok_ha=1
    check 1 "HA manager brought the VM to $want" "after $WAITED_S s"
  else
    ok_ha=0 FAILED_AT=ha-wait
    check 0 "HA manager brought the VM to $want" "still ${SEEN:-unreadable} after $WAITED_S s"
    fail_reason "VM $vmid is HA-managed: the $word was requested from the HA manager; still ${SEEN:-unreadable} after $WAITED_S s (the request stands: the HA manager may still act)"
  fi
  HA_JSON=$(printf '{"managed":true,"requested":"%s","observed":%s,"waited_s":%s}' "$requested" "$(json_of "$SEEN")" "$WAITED_S")
  [ "$ok_ha" = 1 ]
}

# The old QEMU and anything alive in the VM's scope, space-separated.
survivor_pids() {
  printf '%s %s\n' "$1" "$(scope_alive_pids)" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | while read -r sp; do
    qemu_alive "$sp" && printf '%s ' "$sp"
  done | sed 's/ $//'
}

# qm stop aborts a running `qm shutdown` (which holds the config lock for its whole timeout)
# with --overrule-shutdown: qemu-server 8.1.2 and later offer it; HA resources refuse it.
qm_offers_overrule() {
  run_capped "$status_timeout" "$qm" help stop
  [ "$RC" = 0 ] && case $OUT in *--overrule-shutdown*) true ;; *) false ;; esac
}

result_doc() { # OK(0|1) EXTRA_JSON
  ok=$1 extra=$2
  result=ok; [ "$ok" = 1 ] || result=failed
  printf '{"ok":%s,"result":"%s","verb":"%s","request_id":"%s","vmid":%s,"started_at":"%s","finished_at":"%s","forensics":%s,"before":%s,"after":%s,"steps":[%s],"checks":[%s],"reason":%s%s%s%s%s}\n' \
    "$(json_bool "$ok")" "$result" "$VERB" "$REQUEST_ID" "$vmid" "$STARTED_AT" "$(now_iso)" \
    "${FORENSICS_JSON:-null}" "$(vm_json before)" "$(vm_json after)" "${STEPS:-}" "${CHECKS:-}" "$(json_of "$REASON")" \
    "$( [ -z "$HA_JSON" ] || printf ',"ha":%s' "$HA_JSON")" \
    "$( [ -z "$LOCK_HOLDER" ] || printf ',"lock_holder":%s' "$LOCK_HOLDER")" \
    "$( [ -z "$FAILED_AT" ] || printf ',"failed_at":"%s"' "$FAILED_AT")" "$extra"
}

# qm stop's own escalation comes on top of --timeout: QMP quit (up to 60 s on PVE 9), SIGTERM and
# 10 s, SIGKILL and 1 s, after up to 10 s for the config lock. Cutting it short kills the qm
# worker before its SIGKILL and leaves the wedged QEMU running (the 2026-06-11 case).
stop_limit() { echo $((stop_timeout + stop_grace)); }

# stop_vm OLD_PID: qm stop, then confirm that no QEMU process of the VM is left: not the old
# pid (any thread alive, a zombie main thread is not enough) and nothing in its scope — qm
# exits 0 and unlinks its files even when SIGKILL did not take. Sets SURVIVED and SURVIVORS.
stop_vm() {
  old=$1
  SURVIVED=0 SURVIVORS='[]' OVERRULE=false OVERRULED=''
  set -- "$qm" stop "$vmid" --timeout "$stop_timeout"
  if [ -z "$before_ha" ] && qm_offers_overrule; then
    set -- "$@" --overrule-shutdown 1
    OVERRULE=true
  fi
  run_step 'qm stop' "$(stop_limit)" "$@"
  stop_rc=$RC
  OVERRULED=$(printf '%s\n' "$OUT" | sed -n 's/^overruled qmshutdown tasks: //p' | tr -d ' ' | tr ',' '\n' | json_lines)
  if [ "$stop_rc" = 0 ]; then
    check 1 'qm stop exited 0'
    case $OUT in *'Requesting HA stop'*) ha_follow stopped stop || return 1 ;; esac
  else
    step_failure 'qm stop'
    check 0 'qm stop exited 0' "exit $stop_rc$( [ "$TIMED_OUT" = 1 ] && printf ' (timed out on the host)')"
  fi
  left=$(survivor_pids "$old")
  if [ -n "$left" ]; then
    sleep 1
    left=$(survivor_pids "$old")
  fi
  if [ -n "$left" ]; then
    SURVIVED=1
    # shellcheck disable=SC2086 # one word per pid
    SURVIVORS=$(survivors_json $left)
    # shellcheck disable=SC2086
    summary=$(survivor_summary $left)
    check 0 'no QEMU process of the VM left' "$summary"
    fail_reason "QEMU survived the stop ($summary): a thread in D state ignores SIGKILL, and a new start would wait for its scope; the PVE host itself needs attention (storage, kernel)"
  elif [ "$stop_rc" = 0 ]; then
    check 1 'no QEMU process of the VM left' "${old:+pid $old gone, }scope empty"
  fi
  [ "$stop_rc" = 0 ] && [ "$SURVIVED" = 0 ]
}

survivor_json() {
  printf ',"qemu_survived":%s,"survivors":%s,"overrule_shutdown":%s,"overruled_tasks":%s' "$(json_bool "$SURVIVED")" "$SURVIVORS" "$OVERRULE" "${OVERRULED:-[]}"
}

# start_vm: qm start (following the HA manager for an HA-managed VM).
start_vm() {
  if ! run_step 'qm start' "$start_timeout" "$qm" start "$vmid"; then
    step_failure 'qm start'
    check 0 'qm start exited 0' "exit $RC"
    return 1
  fi
  check 1 'qm start exited 0'
  case $OUT in *'Requesting HA start'*) ha_follow running start || return 1 ;; esac
  return 0
}

# confirm_started OLD_PID (after read_vm after): a NEW QEMU runs and its monitor answers. A
# running VM under a backup lock is only resumed by qm start: same pid, nothing started.
confirm_started() {
  if [ "$after_status" != running ] || [ -z "$after_pid" ] || ! qemu_alive "$after_pid"; then
    check 0 'a new QEMU process runs' "status ${after_status:-unknown}"
    fail_reason "qm start reported success, but no QEMU process runs (status ${after_status:-unknown})"
    return 1
  fi
  if [ "$after_pid" = "$1" ]; then
    check 0 'a new QEMU process runs' "same pid $after_pid"
    fail_reason "the QEMU process is the old one (pid $after_pid): nothing was started"
    return 1
  fi
  check 1 'a new QEMU process runs' "pid $after_pid"
  if [ "$after_qmp" != answered ]; then
    check 0 'its monitor (QMP) answers' 'qm status got no answer from QMP'
    fail_reason "QEMU $after_pid started, but its monitor does not answer"
    return 1
  fi
  check 1 'its monitor (QMP) answers'
}

# qm reset exiting 0 means QEMU acknowledged system_reset, not that the VM came back: with the
# disk stalled the reset itself blocks QEMU's main loop and QMP goes silent. So the monitor is
# asked again after a moment, and a silent one makes the reset a failure with the reason.
# Whether the guest comes back is for the caller to confirm (the devvm answering).
verb_reset() {
  read_vm before
  ok=1 acknowledged=false qmp_after=null
  if run_step 'qm reset' "$reset_timeout" "$qm" reset "$vmid"; then
    acknowledged=true
    check 1 'QEMU acknowledged system_reset'
    sleep 1
    run_capped "$qmp_timeout" "$0" --section "$CONFIG_FILE" qmp_query query-status
    if [ "$RC" = 0 ]; then
      qmp_after='"answers"'
      check 1 'QMP answers after the reset'
    else
      ok=0 qmp_after='"silent"'
      check 0 'QMP answers after the reset' "no answer within $qmp_timeout s"
      fail_reason 'QEMU acknowledged the reset but its monitor stopped answering: the main loop is hung (typical while disk I/O is stalled); the guest is not coming back from a reset, a cycle (stop then start) is needed'
    fi
  else
    ok=0
    step_failure 'qm reset'
    check 0 'QEMU acknowledged system_reset' "qm reset exit $RC"
  fi
  read_vm after
  warn=''
  [ -n "$before_pending" ] && warn='pending config exists and a reset does not apply it; a cycle (stop then start) would'
  result_doc "$ok" "$(printf ',"acknowledged":%s,"qmp_after_reset":%s,"pid_unchanged":%s,"pending_unapplied":%s,"warning":%s' \
    "$acknowledged" "$qmp_after" \
    "$( [ -n "$before_pid" ] && [ "$before_pid" = "$after_pid" ] && echo true || echo false)" \
    "$( [ -n "$before_pending" ] && echo true || echo false)" "$(json_of "$warn")")"
  [ "$ok" = 1 ]
}

verb_stop() {
  read_vm before
  ok=1
  stop_vm "$before_pid" || ok=0
  read_vm after
  if [ "$ok" = 1 ] && [ "$after_status" != stopped ]; then
    ok=0
    check 0 'qm status says stopped' "${after_status:-unknown}"
    fail_reason "qm stop exited 0, but qm status says ${after_status:-unknown}"
  fi
  result_doc "$ok" "$(survivor_json)"
  [ "$ok" = 1 ]
}

# A start needs a stopped VM and an empty scope; anything else is refused before qm runs.
verb_start() {
  read_vm before
  ok=1
  if [ "$before_status" != stopped ]; then
    ok=0 FAILED_AT=precheck
    check 0 'the VM was stopped' "${before_status:-unknown}"
    if [ "$before_status" = running ]; then
      fail_reason "VM $vmid is already running (pid ${before_pid:-?}): nothing was started$( [ "$before_lock" = backup ] && printf '; under its backup lock qm start would only resume it')"
    else
      fail_reason "the VM's state could not be read (${before_error:-no answer}): a start needs it stopped"
    fi
  elif [ -n "$before_scope" ]; then
    ok=0 FAILED_AT=precheck
    # shellcheck disable=SC2086
    summary=$(survivor_summary $before_scope)
    check 0 "the previous QEMU left the VM's scope" "$summary"
    fail_reason "processes of the previous QEMU are still in the VM's scope ($summary): qm start would wait for systemd and fail; the PVE host itself needs attention"
  else
    check 1 'the VM was stopped'
    start_vm || ok=0
  fi
  read_vm after
  [ "$ok" = 0 ] || confirm_started "$before_pid" || ok=0
  result_doc "$ok" "$(printf ',"new_pid":%s' "$(json_num_or_null "$after_pid")")"
  [ "$ok" = 1 ]
}

verb_cycle() {
  read_vm before
  ok=1
  if ! stop_vm "$before_pid"; then
    ok=0 FAILED_AT=${FAILED_AT:-stop}
  elif ! start_vm; then
    ok=0 FAILED_AT=${FAILED_AT:-start}
  fi
  read_vm after
  if [ "$ok" = 1 ] && ! confirm_started "$before_pid"; then ok=0 FAILED_AT=confirm-new-pid; fi
  # qm stop's cleanup applies pending config whatever happens next, so this is read from the
  # config itself: pending before, none after.
  applied=false
  [ -n "$before_pending" ] && [ -z "$after_pending" ] && [ "$after_status" != unknown ] && applied=true
  result_doc "$ok" "$(printf ',"old_pid":%s,"new_pid":%s,"pending_applied":%s%s' \
    "$(json_num_or_null "$before_pid")" "$(json_num_or_null "$after_pid")" "$applied" "$(survivor_json)")"
  [ "$ok" = 1 ]
}

verb_forensics() {
  printf '{"ok":true,"result":"ok","verb":"forensics","request_id":"%s","vmid":%s,"started_at":"%s","finished_at":"%s","forensics":%s,"document":' \
    "$REQUEST_ID" "$vmid" "$STARTED_AT" "$(now_iso)" "$(forensics_json)"
  cat "$FORENSICS_PATH"
  printf '}\n'
}
