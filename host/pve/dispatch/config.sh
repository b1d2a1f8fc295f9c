#!/bin/sh
# shellcheck shell=sh disable=SC2034,SC2154
# Part of pve-dispatch (sourced): the root-owned install config.
# ----------------------------------------------------------------------------- the config
CONFIG_KEYS='vmid qm socat qmp_socket qm_lock_dir state_dir log_file escalate lock_wait status_lock_wait'
CONFIG_KEYS="$CONFIG_KEYS status_timeout section_timeout qmp_timeout blockstats_interval reset_timeout"
CONFIG_KEYS="$CONFIG_KEYS stop_timeout stop_grace start_timeout result_wait dmesg_lines console_log"
CONFIG_KEYS="$CONFIG_KEYS scope_dir ha_resources ha_wait"

config_defaults() {
  vmid=102 qm=/usr/sbin/qm socat=/usr/bin/socat qmp_socket='' qm_lock_dir=/var/lock/qemu-server
  state_dir=/var/lib/breakglass log_file=/var/log/breakglass/dispatch.log escalate=none
  lock_wait=30 status_lock_wait=5 status_timeout=10 section_timeout=5 qmp_timeout=3
  blockstats_interval=2 reset_timeout=60 stop_timeout=60 stop_grace=90 start_timeout=120 result_wait=240
  dmesg_lines=40 ha_wait=120
  console_log='' scope_dir='' ha_resources=/etc/pve/ha/resources.cfg
}

config_fail() {
  printf '{"ok":false,"result":"config_error","reason":%s}\n' "$(json_of "$1")"
  printf 'breakglass: install config error: %s\n' "$1" >&2
  exit "$EX_CONFIG"
}

# Parses KEY=VALUE lines (no shell evaluation) and refuses a file the dispatcher's own owner
# (root on a real host) does not control.
load_config() {
  file=$1
  config_defaults
  [ -f "$file" ] || config_fail "config file $file not found"
  owner=$(stat -c %u "$file") self_owner=$(stat -c %u "$0")
  [ "$owner" = 0 ] || [ "$owner" = "$self_owner" ] || config_fail "$file must be owned by root"
  case $(stat -c %A "$file") in ?????w???? | ????????w?) config_fail "$file must not be group- or world-writable" ;; esac
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*} value=${line#*=}
    [ "$key" != "$line" ] || config_fail "line without '=': $line"
    case " $CONFIG_KEYS " in *" $key "*) ;; *) config_fail "unknown key '$key'" ;; esac
    case $key in
      qm | socat | qmp_socket | qm_lock_dir | state_dir | log_file | console_log | scope_dir | ha_resources)
        # console_log (no console capture) and scope_dir (the default) may be empty; every other path is required.
        case $key:$value in console_log: | scope_dir:) ;; *:/*) ;; *) config_fail "$key must be an absolute path" ;; esac
        case $value in *[!A-Za-z0-9/._-]*) config_fail "$key contains unsupported characters" ;; esac ;;
      escalate) case $value in none | sudo) ;; *) config_fail "escalate must be 'none' or 'sudo'" ;; esac ;;
      *) case $value in '' | *[!0-9]*) config_fail "$key must be a whole number" ;; esac ;;
    esac
    eval "$key=\$value"
  done <"$file"
  [ -n "$qmp_socket" ] || qmp_socket=/var/run/qemu-server/$vmid.qmp
  # Where systemd keeps the VM's processes (cgroup v2, as on PVE 7 and later).
  [ -n "$scope_dir" ] || scope_dir=/sys/fs/cgroup/qemu.slice/$vmid.scope
  journal_dir=$state_dir/requests
  forensics_dir=$state_dir/forensics
  lock_file=$state_dir/dispatch.lock
  holder_file=$state_dir/current
}

