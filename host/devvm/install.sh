#!/bin/sh
# Breakglass: install the breakglass account on the devvm. Run as root on the devvm (while it
# is healthy; the breakglass exists for when it is not):
#
#   sh install.sh --public-key breakglass_ed25519.pub --from 10.20.0.0/24
#
# Options
#   --public-key FILE  the breakglass client's public key (one OpenSSH public key line; the
#                      same key the PVE host accepts, or a separate one)
#   --from CIDRS       comma-separated IPv4/IPv6 addresses or CIDR blocks the client may connect
#                      from (the cluster's egress addresses); required
#   --root DIR         install into DIR standing in for / (tests, inspection). Nothing outside
#                      DIR is touched: the account is written as lines in DIR/etc/passwd,
#                      DIR/etc/group and DIR/etc/shadow instead of calling useradd, and the
#                      visudo and sshd checks are skipped.
#
# What it installs (idempotent; running it again repairs modes and owners):
#   account breakglass   a normal login account (the breakglass agent runs commands in a
#                        shell here), shell /bin/bash (or /bin/sh where bash is absent), home
#                        /home/breakglass (0750), password field '*' (key login only)
#   ~breakglass/.ssh/authorized_keys  (0600, in .ssh 0700, owned by breakglass): the client key,
#                        from="CIDRS",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty
#   group systemd-journal      the account reads the system journal (journalctl -k, the units'
#                        logs) without sudo, as the diagnostics the agent runs read-only need;
#                        skipped where the group does not exist
#   /etc/sudoers.d/breakglass  (0440): NOPASSWD: ALL — the breakglass agent has sudo on the devvm.
#                        host/devvm/sudoers.example shows how to narrow it.
#
# Exit: 0 installed, 64 bad option (nothing written), 1 failed (see the message).
set -eu
umask 022
LC_ALL=C
export LC_ALL
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

ME=devvm/install.sh
ACCOUNT=breakglass
GECOS='Breakglass agent'
NEW_HOME=/home/breakglass
SUDOERS=/etc/sudoers.d/breakglass
JOURNAL_GROUP=systemd-journal
KEY_OPTIONS='no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty'
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
ROOT_OPT=/ KEY_FILE='' FROM='' FROM_SET=0
while [ $# -gt 0 ]; do
  case $1 in
    --root) need_value "$1" $# "${2-}"; ROOT_OPT=$2; shift 2 ;;
    --root=*) ROOT_OPT=${1#*=}; shift ;;
    --public-key) need_value "$1" $# "${2-}"; KEY_FILE=$2; shift 2 ;;
    --public-key=*) KEY_FILE=${1#*=}; shift ;;
    --from) need_value "$1" $# "${2-}"; FROM=$2 FROM_SET=1; shift 2 ;;
    --from=*) FROM=${1#*=} FROM_SET=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) refuse "$(shown "$1")" 'unknown option (known: --public-key --from --root)' ;;
  esac
done

# ---------------------------------------------------------------- input checks (no writes)
check_root "$ROOT_OPT"
check_from "$FROM_SET"
check_public_key "$KEY_FILE"

check_as_root
if [ -z "$R" ]; then
  [ "$AS_ROOT" = 1 ] || die 'must run as root on the devvm (or pass --root DIR for a scratch install)'
  for tool in useradd usermod getent; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (apt-get install passwd)"
  done
  command -v sudo >/dev/null 2>&1 || warn 'sudo is not installed: the breakglass agent will have no root on the devvm until it is (apt-get install sudo)'
fi
# The login shell: bash where the devvm has it (it stands in for / under --root).
SHELL_PATH=/bin/sh
if [ -x "$R/bin/bash" ]; then SHELL_PATH=/bin/bash; fi

# ------------------------------------------------------------------------- writing helpers
stage_begin

# ------------------------------------------------------------------- staged content, checked
cat >"$STAGE/sudoers" <<EOF
# Managed by host/devvm/install.sh (breakglass). The breakglass agent has sudo on the devvm:
# it diagnoses and repairs it. Every command it runs is in the session's workflow history.
# Narrower variants: host/devvm/sudoers.example.
Defaults:$ACCOUNT !requiretty
$ACCOUNT ALL=(ALL:ALL) NOPASSWD: ALL
EOF
chmod 0440 "$STAGE/sudoers"
if [ -z "$R" ] && command -v visudo >/dev/null 2>&1; then
  visudo -cqf "$STAGE/sudoers" >/dev/null || die 'visudo rejects the composed sudoers drop-in; nothing installed'
fi

{
  echo '# Managed by host/devvm/install.sh (breakglass). Re-running the installer rewrites this file.'
  printf 'from="%s",%s %s\n' "$FROM" "$KEY_OPTIONS" "$KEY"
} >"$STAGE/authorized_keys"
check_staged_keys

# ------------------------------------------------------------------------------ the account
# scratch_account: the --root stand-in for useradd/usermod (host/lib/install-common.sh): a
# normal account, ids from 1000 up, keeping an existing home. Sets ACCOUNT_UID, ACCOUNT_GID
# and ACCOUNT_HOME.
scratch_account() {
  scratch_group 1000 59999
  ACCOUNT_HOME=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $6; exit }' "$(db_path passwd)")
  if [ -n "$ACCOUNT_HOME" ]; then
    ACCOUNT_UID=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $3; exit }' "$(db_path passwd)")
    awk -F: -v OFS=: -v u="$ACCOUNT" -v s="$SHELL_PATH" '$1 == u { $7 = s } { print }' "$(db_path passwd)" >"$STAGE/passwd"
  else
    ACCOUNT_HOME=$NEW_HOME
    ACCOUNT_UID=$(free_id "$(db_path passwd)" 1000 59999 "$ACCOUNT_GID")
    { cat "$(db_path passwd)"; printf '%s:x:%s:%s:%s:%s:%s\n' "$ACCOUNT" "$ACCOUNT_UID" "$ACCOUNT_GID" "$GECOS" "$ACCOUNT_HOME" "$SHELL_PATH"; } >"$STAGE/passwd"
  fi
  # Member of the journal readers' group, once, where the group exists.
  awk -F: -v OFS=: -v g="$JOURNAL_GROUP" -v u="$ACCOUNT" '
    $1 == g { n = split($4, m, ","); found = 0; for (i = 1; i <= n; i++) if (m[i] == u) found = 1
              if (!found) $4 = ($4 == "" ? u : $4 "," u) }
    { print }' "$STAGE/group" >"$STAGE/group.new" && mv "$STAGE/group.new" "$STAGE/group"
  scratch_finish
}

real_account() {
  if entry=$(getent passwd "$ACCOUNT"); then
    old_shell=$(printf '%s' "$entry" | cut -d: -f7)
    if [ "$old_shell" != "$SHELL_PATH" ]; then
      usermod --shell "$SHELL_PATH" "$ACCOUNT"
      say "account $ACCOUNT: shell $SHELL_PATH (was $old_shell)"
    else
      say "account $ACCOUNT exists (shell $SHELL_PATH)"
    fi
  else
    useradd --create-home --home-dir "$NEW_HOME" --user-group --shell "$SHELL_PATH" --comment "$GECOS" "$ACCOUNT"
    say "created account $ACCOUNT (home $NEW_HOME, shell $SHELL_PATH)"
  fi
  real_password
  if getent group "$JOURNAL_GROUP" >/dev/null; then
    usermod --append --groups "$JOURNAL_GROUP" "$ACCOUNT"
    say "account $ACCOUNT reads the system journal (group $JOURNAL_GROUP)"
  fi
  entry=$(getent passwd "$ACCOUNT")
  ACCOUNT_UID=$(printf '%s' "$entry" | cut -d: -f3)
  ACCOUNT_GID=$(printf '%s' "$entry" | cut -d: -f4)
  ACCOUNT_HOME=$(printf '%s' "$entry" | cut -d: -f6)
}

# -------------------------------------------------------------------------------- install
say "installing the breakglass account on the devvm${R:+ into scratch root $R}"
[ "$AS_ROOT" = 1 ] || say 'not running as root: files keep your ownership (on a real host they belong to the account and root)'

if [ -n "$R" ]; then scratch_account; else real_account; fi
case $ACCOUNT_HOME in /?*) ;; *) die "account $ACCOUNT has no usable home directory ('$ACCOUNT_HOME')" ;; esac
OWNER=$ACCOUNT_UID:$ACCOUNT_GID

ensure_dir "$ACCOUNT_HOME" 0750 "$OWNER"
ensure_dir "$ACCOUNT_HOME/.ssh" 0700 "$OWNER"
put "$ACCOUNT_HOME/.ssh/authorized_keys" 0600 "$OWNER" "$STAGE/authorized_keys"

ensure_dir /etc/sudoers.d 0755 0:0
put "$SUDOERS" 0440 0:0 "$STAGE/sudoers"

NOT_EFFECTIVE=''
if [ -n "$R" ]; then
  say '--root: skipped visudo and the sshd checks'
else
  if [ -f /etc/sudoers ] && ! grep -Eq '^[#@]includedir[[:space:]]+/etc/sudoers\.d' /etc/sudoers; then
    warn '/etc/sudoers does not include /etc/sudoers.d: add "@includedir /etc/sudoers.d"'
  fi
  if command -v sshd >/dev/null 2>&1; then
    effective=$(sshd -T -C "user=$ACCOUNT,host=localhost,addr=127.0.0.1" 2>/dev/null || true)
    keyfiles=$(printf '%s\n' "$effective" | sed -n 's/^authorizedkeysfile //p')
    case " $keyfiles " in
      *' .ssh/authorized_keys '* | *' %h/.ssh/authorized_keys '* | *" $ACCOUNT_HOME/.ssh/authorized_keys "*) ;;
      *) NOT_EFFECTIVE="sshd reads '$keyfiles' for $ACCOUNT, not ~/.ssh/authorized_keys" ;;
    esac
    warn_sshd_allow "$effective"
  fi
fi

finish "ssh -i <private key> $ACCOUNT@<devvm> sudo -n true" "$NOT_EFFECTIVE"
