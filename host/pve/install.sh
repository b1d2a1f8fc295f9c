#!/bin/sh
# Breakglass: install the forced-command account on the Proxmox VE host. Run as root on the
# PVE node that hosts the devvm, from a copy of this repository's host/pve directory:
#
#   sh host/pve/install.sh --public-key breakglass_ed25519.pub --from 10.20.0.0/24 [--vmid 102]
#
# Options
#   --public-key FILE  the breakglass client's public key (one OpenSSH public key line)
#   --from CIDRS       comma-separated IPv4/IPv6 addresses or CIDR blocks the client may connect
#                      from (the cluster's egress addresses); required
#   --vmid N           the devvm's VM id (default 102); written to the install config only
#   --root DIR         install into DIR standing in for / (tests, inspection). Nothing outside
#                      DIR is touched: the account is written as lines in DIR/etc/passwd,
#                      DIR/etc/group and DIR/etc/shadow instead of calling useradd, and
#                      visudo/sshd checks and the sshd reload are skipped.
#
# What it installs (all idempotent; running it again repairs modes and owners):
#   account breakglass        system account, shell /bin/sh, home /var/lib/breakglass-home
#                             (root:root 0755, so the account cannot write its own home),
#                             password field '*' (no password; not "locked" for sshd)
#   /usr/local/lib/breakglass/pve-dispatch    the forced-command dispatcher, root:root 0755
#   /usr/local/lib/breakglass/dispatch/*.sh   its parts (sourced), root:root 0644
#   /etc/breakglass/pve.conf                  install config, root:root 0644 (kept if present)
#   /etc/breakglass/authorized_keys           the one forced-command key line, root:root 0644
#   /etc/ssh/sshd_config.d/breakglass.conf    Match User breakglass: that key file, no TTY,
#                                             no forwarding, public key only
#   /etc/sudoers.d/breakglass                 0440: the dispatcher may re-run itself as root
#                                             with already validated words, nothing else
#   /var/lib/breakglass                       state: journal, forensics, lock (root 0700)
#   /var/log/breakglass                       dispatcher log after escalation (root 0750)
#   /etc/logrotate.d/breakglass               rotation of that log
#
# Exit: 0 installed, 64 bad option (nothing written), 1 failed (see the message).
set -eu
umask 022
LC_ALL=C
export LC_ALL
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

ME=pve/install.sh
ACCOUNT=breakglass
GECOS='Breakglass forced-command verbs'
HOME_DIR=/var/lib/breakglass-home
LIB_DIR=/usr/local/lib/breakglass
DISPATCHER=$LIB_DIR/pve-dispatch
CONF_DIR=/etc/breakglass
CONF=$CONF_DIR/pve.conf
AUTH_KEYS=$CONF_DIR/authorized_keys
STATE_DIR=/var/lib/breakglass
LOG_DIR=/var/log/breakglass
SSHD_DROPIN=/etc/ssh/sshd_config.d/breakglass.conf
SUDOERS=/etc/sudoers.d/breakglass
LOGROTATE=/etc/logrotate.d/breakglass
# The shared helpers (messages, option and input checks, staged atomic writes, the --root
# account files): host/lib/install-common.sh, next to this script's directory.
HERE=$(cd "$(dirname "$0")" && pwd -P)
if [ ! -f "$HERE/../lib/install-common.sh" ]; then
  printf '%s: ERROR: %s\n' "$ME" "$HERE/../lib/install-common.sh is missing (copy host/lib next to this script's directory)" >&2
  exit 1
fi
# shellcheck source-path=SCRIPTDIR source=../lib/install-common.sh
. "$HERE/../lib/install-common.sh"

# ------------------------------------------------------------------------------- options
ROOT_OPT=/ KEY_FILE='' FROM='' FROM_SET=0 VMID=102
while [ $# -gt 0 ]; do
  case $1 in
    --root) need_value "$1" $# "${2-}"; ROOT_OPT=$2; shift 2 ;;
    --root=*) ROOT_OPT=${1#*=}; shift ;;
    --public-key) need_value "$1" $# "${2-}"; KEY_FILE=$2; shift 2 ;;
    --public-key=*) KEY_FILE=${1#*=}; shift ;;
    --from) need_value "$1" $# "${2-}"; FROM=$2 FROM_SET=1; shift 2 ;;
    --from=*) FROM=${1#*=} FROM_SET=1; shift ;;
    --vmid) need_value "$1" $# "${2-}"; VMID=$2; shift 2 ;;
    --vmid=*) VMID=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) refuse "$(shown "$1")" 'unknown option (known: --public-key --from --vmid --root)' ;;
  esac
done

# ---------------------------------------------------------------- input checks (no writes)
check_vmid() {
  case $VMID in
    '' | *[!0-9]* | 0*) refuse --vmid "must be a number, the devvm's Proxmox VM id (100-999999999); got '$(shown "$VMID")'" ;;
  esac
  { [ "${#VMID}" -le 9 ] && [ "$VMID" -ge 100 ]; } || refuse --vmid "Proxmox VM ids are 100-999999999; got $VMID"
}

check_root "$ROOT_OPT"
check_vmid
check_from "$FROM_SET"
check_public_key "$KEY_FILE"
if [ ! -f "$HERE/pve-dispatch" ] || [ ! -f "$HERE/dispatch/verbs.sh" ] || [ ! -f "$HERE/pve.conf.example" ]; then
  die "pve-dispatch, dispatch/ and pve.conf.example must sit next to this script (copy the whole host/pve directory)"
fi
if ! grep -q '^vmid=' "$HERE/pve.conf.example" || ! grep -q '^escalate=' "$HERE/pve.conf.example"; then
  die "$HERE/pve.conf.example lacks its active vmid= and escalate= lines"
fi

check_as_root
if [ -z "$R" ]; then
  [ "$AS_ROOT" = 1 ] || die 'must run as root on the PVE host (or pass --root DIR for a scratch install)'
  # The dispatcher's own needs; qm missing means this is not the PVE node of the devvm.
  for tool in sudo flock timeout setsid sha256sum logger stat mktemp useradd usermod getent; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (apt-get install sudo util-linux coreutils bsdutils passwd)"
  done
  command -v visudo >/dev/null 2>&1 || die "'visudo' is missing (it comes with sudo)"
  command -v sshd >/dev/null 2>&1 || die "'sshd' is missing (apt-get install openssh-server)"
  sshd -t || die 'sshd -t fails before any change: fix the sshd configuration first; nothing installed'
  command -v socat >/dev/null 2>&1 || warn "socat is missing: forensics will record its QMP sections as failed (apt-get install socat)"
  if ! command -v qm >/dev/null 2>&1; then
    warn 'qm not found: is this the Proxmox VE node that hosts the devvm?'
  elif ! qm status "$VMID" >/dev/null 2>&1; then
    warn "qm status $VMID failed: VM $VMID is not on this node (the verbs act on this node only)"
  fi
fi

# ------------------------------------------------------------------------- writing helpers
stage_begin

# ------------------------------------------------------------------- staged content, checked
AUTH_LINE="command=\"$DISPATCHER $CONF\",restrict,from=\"$FROM\" $KEY"
{
  echo '# Managed by host/pve/install.sh (breakglass). Re-running the installer rewrites this file.'
  echo '# The forced command is the only thing this key can run: one of the verbs'
  echo '# status | forensics | reset | stop | start | cycle, for the VM id in /etc/breakglass/pve.conf.'
  printf '%s\n' "$AUTH_LINE"
} >"$STAGE/authorized_keys"
check_staged_keys

cat >"$STAGE/sshd.conf" <<EOF
# Managed by host/pve/install.sh (breakglass). The key line in $AUTH_KEYS carries
# command="...",restrict,from="..."; this block repeats its restrictions on the server side
# and points sshd at that root-owned file (the account's home is not writable by it anyway).
Match User $ACCOUNT
	AuthorizedKeysFile $AUTH_KEYS
	AuthenticationMethods publickey
	PasswordAuthentication no
	KbdInteractiveAuthentication no
	PermitTTY no
	DisableForwarding yes
	AllowTcpForwarding no
	AllowAgentForwarding no
	AllowStreamLocalForwarding no
	X11Forwarding no
	PermitTunnel no
	PermitUserRC no
EOF

cat >"$STAGE/sudoers" <<EOF
# Managed by host/pve/install.sh (breakglass). The dispatcher checks the client's words as the
# unprivileged $ACCOUNT account, then re-runs itself through 'sudo -n' with exactly those words
# (escalate=sudo in $CONF). Nothing else may run as root.
Defaults:$ACCOUNT !requiretty
$ACCOUNT ALL=(root) NOPASSWD: $DISPATCHER --validated *
EOF
chmod 0440 "$STAGE/sudoers"
if [ -z "$R" ]; then
  visudo -cqf "$STAGE/sudoers" >/dev/null || die 'visudo rejects the composed sudoers drop-in; nothing installed'
fi

cat >"$STAGE/logrotate" <<EOF
# Managed by host/pve/install.sh (breakglass).
$LOG_DIR/dispatch.log {
	weekly
	rotate 26
	compress
	delaycompress
	missingok
	notifempty
	create 0600 root root
}
EOF

# ------------------------------------------------------------------------------ the account
# scratch_account: the --root stand-in for useradd/usermod (host/lib/install-common.sh): a
# system account, ids from 999 down.
scratch_account() {
  scratch_group 999 100
  if has_account "$(db_path passwd)"; then
    awk -F: -v OFS=: -v u="$ACCOUNT" -v g="$ACCOUNT_GID" -v h="$HOME_DIR" -v s=/bin/sh \
      '$1 == u { $4 = g; $6 = h; $7 = s } { print }' "$(db_path passwd)" >"$STAGE/passwd"
  else
    uid=$(free_id "$(db_path passwd)" 999 100 "$ACCOUNT_GID")
    { cat "$(db_path passwd)"; printf '%s:x:%s:%s:%s:%s:/bin/sh\n' "$ACCOUNT" "$uid" "$ACCOUNT_GID" "$GECOS" "$HOME_DIR"; } >"$STAGE/passwd"
  fi
  scratch_finish
}

real_account() {
  if entry=$(getent passwd "$ACCOUNT"); then
    old_home=$(printf '%s' "$entry" | cut -d: -f6) old_shell=$(printf '%s' "$entry" | cut -d: -f7)
    if [ "$old_home" != "$HOME_DIR" ] || [ "$old_shell" != /bin/sh ]; then
      usermod --home "$HOME_DIR" --shell /bin/sh "$ACCOUNT"
      say "account $ACCOUNT: home $HOME_DIR, shell /bin/sh (was $old_home, $old_shell)"
    else
      say "account $ACCOUNT exists (home $HOME_DIR, shell /bin/sh)"
    fi
    others=$(id -nG "$ACCOUNT" | tr ' ' '\n' | grep -vx "$ACCOUNT" | tr '\n' ' ' || true)
    [ -z "$others" ] || warn "account $ACCOUNT is also in groups: $others- it needs none of them; consider removing them"
  else
    useradd --system --user-group --no-create-home --home-dir "$HOME_DIR" --shell /bin/sh --comment "$GECOS" "$ACCOUNT"
    say "created system account $ACCOUNT (home $HOME_DIR, shell /bin/sh)"
  fi
  real_password
}

# -------------------------------------------------------------------------------- install
say "installing the breakglass forced-command account for VM $VMID${R:+ into scratch root $R}"
[ "$AS_ROOT" = 1 ] || say 'not running as root: files keep your ownership (on a real host all of them are root-owned)'

ensure_dir "$LIB_DIR" 0755 0:0
put "$DISPATCHER" 0755 0:0 "$HERE/pve-dispatch"
ensure_dir "$LIB_DIR/dispatch" 0755 0:0
for part in "$HERE"/dispatch/*.sh; do put "$LIB_DIR/dispatch/${part##*/}" 0644 0:0 "$part"; done

ensure_dir "$CONF_DIR" 0755 0:0
if [ -e "$R$CONF" ]; then
  set_attrs "$R$CONF" 0644 0:0
  say "kept existing $CONF (an install config is never overwritten; edit it by hand)"
  have_vmid=$(sed -n 's/^vmid=//p' "$R$CONF" | tail -n 1)
  [ "${have_vmid:-102}" = "$VMID" ] ||
    warn "$CONF has vmid=${have_vmid:-102 (default)} but --vmid is $VMID: the kept file wins; edit it if --vmid is right"
  [ "$(sed -n 's/^escalate=//p' "$R$CONF" | tail -n 1)" = sudo ] ||
    warn "$CONF lacks escalate=sudo: as the $ACCOUNT account the dispatcher cannot run qm (root only)"
else
  sed -e "s/^vmid=.*/vmid=$VMID/" -e 's/^escalate=.*/escalate=sudo/' \
    -e "s|^#qmp_socket=/var/run/qemu-server/[0-9]*\\.qmp|#qmp_socket=/var/run/qemu-server/$VMID.qmp|" \
    "$HERE/pve.conf.example" >"$STAGE/pve.conf"
  put "$CONF" 0644 0:0 "$STAGE/pve.conf"
fi

ensure_dir "$STATE_DIR" 0700 0:0
ensure_dir "$LOG_DIR" 0750 0:0
ensure_dir /etc/logrotate.d 0755 0:0
put "$LOGROTATE" 0644 0:0 "$STAGE/logrotate"

ensure_dir "$HOME_DIR" 0755 0:0
if [ -n "$R" ]; then scratch_account; else real_account; fi

put "$AUTH_KEYS" 0644 0:0 "$STAGE/authorized_keys"

ensure_dir /etc/sudoers.d 0755 0:0
put "$SUDOERS" 0440 0:0 "$STAGE/sudoers"

ensure_dir /etc/ssh/sshd_config.d 0755 0:0
had_dropin=0
if [ -f "$R$SSHD_DROPIN" ]; then cp -p "$R$SSHD_DROPIN" "$STAGE/sshd.conf.previous"; had_dropin=1; fi
put "$SSHD_DROPIN" 0644 0:0 "$STAGE/sshd.conf"
dropin_changed=$CHANGED

NOT_EFFECTIVE=''
if [ -n "$R" ]; then
  say '--root: skipped visudo, sshd -t and the sshd reload'
else
  if ! sshd -t; then
    if [ "$had_dropin" = 1 ]; then cp -p "$STAGE/sshd.conf.previous" "$SSHD_DROPIN"; else rm -f "$SSHD_DROPIN"; fi
    die "sshd -t rejects the configuration with $SSHD_DROPIN; the previous state is restored"
  fi
  effective=$(sshd -T -C "user=$ACCOUNT,host=localhost,addr=127.0.0.1" 2>/dev/null || true)
  printf '%s\n' "$effective" | grep -qx "authorizedkeysfile $AUTH_KEYS" ||
    NOT_EFFECTIVE="sshd does not read $AUTH_KEYS for $ACCOUNT: /etc/ssh/sshd_config needs 'Include /etc/ssh/sshd_config.d/*.conf' before any Match block"
  warn_sshd_allow "$effective"
  if [ "$dropin_changed" = 1 ]; then
    if systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service 2>/dev/null; then
      say 'reloaded sshd (existing sessions are kept)'
    else
      warn 'could not reload sshd: run "systemctl reload ssh" to apply the drop-in'
    fi
  fi
fi

finish "ssh -i <private key> $ACCOUNT@<this host> status" "$NOT_EFFECTIVE"
