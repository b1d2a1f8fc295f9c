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
# ssh2 (the client) cannot use security-key (sk-*) types: a key it cannot use is refused here.
KEY_TYPES='ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa'

say() { printf '%s: %s\n' "$ME" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$ME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$ME" "$*" >&2; exit 1; }
# refuse OPTION REASON: bad input, named by its option; nothing has been written yet.
refuse() {
  printf '%s: %s: %s\n' "$ME" "$1" "$2" >&2
  printf '%s: nothing was written (run with --help for usage)\n' "$ME" >&2
  exit 64
}
# A value as it may be shown in a message: printable, bounded.
shown() { printf '%s' "$1" | tr -c '[:print:]' '?' | cut -c1-80; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

# ------------------------------------------------------------------------------- options
ROOT_OPT=/ KEY_FILE='' FROM='' FROM_SET=0 VMID=102
need_value() { # OPTION REMAINING_ARG_COUNT NEXT_ARG
  [ "$2" -ge 2 ] || refuse "$1" 'needs a value'
  case $3 in -*) refuse "$1" "needs a value (got option '$(shown "$3")')" ;; esac
}
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
check_root() {
  [ -n "$ROOT_OPT" ] || refuse --root 'must not be empty'
  [ -d "$ROOT_OPT" ] || refuse --root "$(shown "$ROOT_OPT"): no such directory"
  R=$(cd "$ROOT_OPT" && pwd -P)
  [ "$R" != / ] || R=''
}

check_vmid() {
  case $VMID in
    '' | *[!0-9]* | 0*) refuse --vmid "must be a number, the devvm's Proxmox VM id (100-999999999); got '$(shown "$VMID")'" ;;
  esac
  { [ "${#VMID}" -le 9 ] && [ "$VMID" -ge 100 ]; } || refuse --vmid "Proxmox VM ids are 100-999999999; got $VMID"
}

# check_from: IPv4/IPv6 addresses or CIDR blocks only. sshd silently matches nothing for a
# block with host bits set (10.0.0.5/24), so such a block is refused here rather than at 3 a.m.
check_from() {
  [ "$FROM_SET" = 1 ] || refuse --from "is required: the comma-separated addresses or CIDR blocks the breakglass client connects from"
  [ -n "$FROM" ] || refuse --from 'must not be empty'
  [ "${#FROM}" -le 1000 ] || refuse --from 'longer than 1000 characters'
  case $FROM in
    *[!0-9A-Fa-f.:/,]*) refuse --from "'$(shown "$FROM")' contains characters other than hex digits, '.', ':', '/' and ',' (addresses and CIDR blocks only: no host names, wildcards, spaces or negations)" ;;
  esac
  problem=$(printf '%s\n' "$FROM" | awk -F, '
    function hexval(s,    i, v) { v = 0; for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", tolower(substr(s, i, 1))) - 1; return v }
    # host_bits_zero(values, count, width, prefix): every bit after the prefix is zero.
    function host_bits_zero(val, n, w, p,    i, keep) {
      for (i = 1; i <= n; i++) {
        keep = p - w * (i - 1); if (keep < 0) keep = 0; if (keep > w) keep = w
        if (val[i] % 2 ^ (w - keep) != 0) return 0
      }
      return 1
    }
    function v4(a, p,    o, n, i, val) {
      n = split(a, o, ".")
      if (n != 4) return "not an IPv4 address"
      for (i = 1; i <= 4; i++) {
        if (o[i] !~ /^[0-9]+$/ || length(o[i]) > 3 || (length(o[i]) > 1 && o[i] ~ /^0/) || o[i] + 0 > 255) return "not an IPv4 address"
        val[i] = o[i] + 0
      }
      if (p == "") p = 32
      if (p + 0 > 32) return "an IPv4 prefix is at most /32"
      if (!host_bits_zero(val, 4, 8, p + 0)) return "host bits set after the /" p " prefix (sshd would match nothing); use the network address"
      return ""
    }
    function v6(a, p,    halves, head, tail, g, n, i, k, val, total) {
      if (a ~ /\./) return "IPv6 with embedded IPv4 is not accepted; write it in hex"
      k = split(a, halves, "::")
      if (k > 2) return "not an IPv6 address (more than one ::)"
      n = 0
      if (halves[1] != "") { total = split(halves[1], head, ":"); for (i = 1; i <= total; i++) g[++n] = head[i] }
      if (k == 2) {
        total = 0; if (halves[2] != "") total = split(halves[2], tail, ":")
        if (n + total > 7) return "not an IPv6 address (too many groups)"
        while (n < 8 - total) g[++n] = "0"
        for (i = 1; i <= total; i++) g[++n] = tail[i]
      }
      if (n != 8) return "not an IPv6 address (expected 8 groups)"
      for (i = 1; i <= 8; i++) {
        if (g[i] !~ /^[0-9A-Fa-f]+$/ || length(g[i]) > 4) return "not an IPv6 address"
        val[i] = hexval(g[i])
      }
      if (p == "") p = 128
      if (p + 0 > 128) return "an IPv6 prefix is at most /128"
      if (!host_bits_zero(val, 8, 16, p + 0)) return "host bits set after the /" p " prefix (sshd would match nothing); use the network address"
      return ""
    }
    {
      for (e = 1; e <= NF; e++) {
        entry = $e
        if (entry == "") { print "empty entry in the list"; exit }
        slash = split(entry, part, "/")
        if (slash > 2) { print "\047" entry "\047: more than one /"; exit }
        addr = part[1]; prefix = (slash == 2 ? part[2] : "")
        if (slash == 2 && (prefix !~ /^[0-9]+$/ || (length(prefix) > 1 && prefix ~ /^0/))) { print "\047" entry "\047: the prefix length must be a number"; exit }
        if (slash == 2 && prefix + 0 == 0) { print "\047" entry "\047: a /0 block admits every source address; name the cluster egress addresses"; exit }
        why = (addr ~ /:/ ? v6(addr, prefix) : v4(addr, prefix))
        if (why != "") { print "\047" entry "\047: " why; exit }
      }
    }')
  [ -z "$problem" ] || refuse --from "$problem"
}

# check_public_key: exactly one plain OpenSSH public key line. Sets KEY and KEY_FINGERPRINT.
# The file's content is never echoed: if it is a private key by mistake, it stays unprinted.
check_public_key() {
  f=$KEY_FILE
  [ -n "$f" ] || refuse --public-key "is required: the breakglass client's public key file (the .pub of 'ssh-keygen -t ed25519')"
  [ -f "$f" ] || refuse --public-key "$(shown "$f"): no such file"
  [ -r "$f" ] || refuse --public-key "$(shown "$f"): not readable"
  [ "$(wc -c <"$f")" -le 16384 ] || refuse --public-key "$(shown "$f"): too large for one public key line"
  if grep -q 'PRIVATE KEY' "$f"; then
    refuse --public-key "$(shown "$f") is a private key: pass its public half (the .pub file); a private key never goes to a host"
  fi
  n=$(grep -c '[^[:space:]]' "$f" || true)
  [ "$n" = 1 ] || refuse --public-key "$(shown "$f") must hold exactly one ssh public key line (found $n non-empty lines)"
  KEY=$(grep '[^[:space:]]' "$f" | tr -d '\r' | sed 's/[[:space:]][[:space:]]*/ /g; s/^ //; s/ $//')
  printf '%s\n' "$KEY" | grep -Eq "^($KEY_TYPES) [A-Za-z0-9+/]+={0,2}( [ -~]+)?\$" ||
    refuse --public-key "$(shown "$f") is not a plain public key line: expected 'ssh-ed25519 AAAA… comment' (or ecdsa-sha2-nistp*/ssh-rsa) without options; the installer adds the options"
  KEY_FINGERPRINT='(ssh-keygen not found; fingerprint not checked)'
  if command -v ssh-keygen >/dev/null 2>&1; then
    KEY_FINGERPRINT=$(printf '%s\n' "$KEY" | ssh-keygen -l -f - 2>/dev/null) ||
      refuse --public-key "$(shown "$f"): ssh-keygen cannot read it as a public key (damaged base64?)"
  fi
}

check_root
check_vmid
check_from
check_public_key
HERE=$(cd "$(dirname "$0")" && pwd -P)
if [ ! -f "$HERE/pve-dispatch" ] || [ ! -f "$HERE/pve.conf.example" ]; then
  die "pve-dispatch and pve.conf.example must sit next to this script (copy the whole host/pve directory)"
fi
if ! grep -q '^vmid=' "$HERE/pve.conf.example" || ! grep -q '^escalate=' "$HERE/pve.conf.example"; then
  die "$HERE/pve.conf.example lacks its active vmid= and escalate= lines"
fi

AS_ROOT=0
[ "$(id -u)" = 0 ] && AS_ROOT=1
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
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/breakglass-install.XXXXXX")
TMP=''
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  if [ -n "$TMP" ]; then rm -f "$TMP"; fi
  rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# set_attrs PATH MODE UID:GID — owners only when running as root (a scratch install by a
# normal user keeps the user's ownership; on a real host everything is root's).
set_attrs() {
  chmod "$2" "$1"
  if [ "$AS_ROOT" = 1 ]; then chown "$3" "$1"; fi
}

ensure_dir() { # PATH MODE UID:GID
  d=$R$1
  if [ -e "$d" ] && [ ! -d "$d" ]; then die "$1 exists and is not a directory"; fi
  if [ ! -d "$d" ]; then mkdir -p "$d"; say "created $1"; fi
  set_attrs "$d" "$2" "$3"
}

# put PATH MODE UID:GID SOURCE — install SOURCE as PATH atomically (same-directory temp file,
# then rename). Sets CHANGED to 1 when the content changed.
put() {
  dest=$R$1
  TMP=$(mktemp "$dest.new.XXXXXX")
  cat "$4" >"$TMP"
  set_attrs "$TMP" "$2" "$3"
  if [ -f "$dest" ] && cmp -s "$TMP" "$dest"; then
    rm -f "$TMP"
    set_attrs "$dest" "$2" "$3"
    CHANGED=0
    say "unchanged $1 ($2)"
  else
    mv -f "$TMP" "$dest"
    CHANGED=1
    say "installed $1 ($2)"
  fi
  TMP=''
}

# ------------------------------------------------------------------- staged content, checked
AUTH_LINE="command=\"$DISPATCHER $CONF\",restrict,from=\"$FROM\" $KEY"
{
  echo '# Managed by host/pve/install.sh (breakglass). Re-running the installer rewrites this file.'
  echo '# The forced command is the only thing this key can run: one of the verbs'
  echo '# status | forensics | reset | stop | start | cycle, for the VM id in /etc/breakglass/pve.conf.'
  printf '%s\n' "$AUTH_LINE"
} >"$STAGE/authorized_keys"
if command -v ssh-keygen >/dev/null 2>&1; then
  ssh-keygen -l -f "$STAGE/authorized_keys" >/dev/null 2>&1 || die 'ssh-keygen cannot parse the composed authorized_keys line'
fi

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
# scratch_account: the --root stand-in for useradd/usermod. Adds or updates the account in
# DIR/etc/group, DIR/etc/passwd and DIR/etc/shadow (each created when absent), keeping ids.
scratch_db() { # FILE DEFAULT_MODE: put the staged FILE, keeping an existing file's mode/owner
  f=$R/etc/$1
  if [ -f "$f" ]; then put "/etc/$1" "$(stat -c %a "$f")" "$(stat -c %u:%g "$f")" "$STAGE/$1"; else put "/etc/$1" "$2" 0:0 "$STAGE/$1"; fi
}
db_path() { if [ -f "$R/etc/$1" ]; then echo "$R/etc/$1"; else echo "$STAGE/$1.empty"; fi; }
free_id() { # FILE LOW HIGH [PREFERRED]: a numeric id unused in FILE's third field, highest first
  awk -F: -v lo="$2" -v hi="$3" -v pref="${4-}" '{ used[$3] = 1 }
    END { if (pref != "" && !(pref in used)) { print pref; exit }
          for (i = hi; i >= lo; i--) if (!(i in used)) { print i; exit } }' "$1"
}
scratch_account() {
  mkdir -p "$R/etc"
  for db in group passwd shadow; do [ -f "$R/etc/$db" ] || : >"$STAGE/$db.empty"; done
  gid=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $3; exit }' "$(db_path group)")
  if [ -z "$gid" ]; then
    gid=$(free_id "$(db_path group)" 100 999)
    { cat "$(db_path group)"; printf '%s:x:%s:\n' "$ACCOUNT" "$gid"; } >"$STAGE/group"
  else
    cat "$(db_path group)" >"$STAGE/group"
  fi
  if awk -F: -v u="$ACCOUNT" '$1 == u { found = 1 } END { exit !found }' "$(db_path passwd)"; then
    awk -F: -v OFS=: -v u="$ACCOUNT" -v g="$gid" -v h="$HOME_DIR" -v s=/bin/sh \
      '$1 == u { $4 = g; $6 = h; $7 = s } { print }' "$(db_path passwd)" >"$STAGE/passwd"
  else
    uid=$(free_id "$(db_path passwd)" 100 999 "$gid")
    { cat "$(db_path passwd)"; printf '%s:x:%s:%s:%s:%s:/bin/sh\n' "$ACCOUNT" "$uid" "$gid" "$GECOS" "$HOME_DIR"; } >"$STAGE/passwd"
  fi
  if awk -F: -v u="$ACCOUNT" '$1 == u { found = 1 } END { exit !found }' "$(db_path shadow)"; then
    awk -F: -v OFS=: -v u="$ACCOUNT" '$1 == u { $2 = "*" } { print }' "$(db_path shadow)" >"$STAGE/shadow"
  else
    { cat "$(db_path shadow)"; printf '%s:*:%s:0:99999:7:::\n' "$ACCOUNT" "$(($(date +%s) / 86400))"; } >"$STAGE/shadow"
  fi
  scratch_db group 0644
  scratch_db passwd 0644
  scratch_db shadow 0640
  say "--root: account $ACCOUNT written to $R/etc/{passwd,group,shadow} (useradd not called)"
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
  # '*': no password can match, and unlike '!' sshd does not treat the account as locked.
  [ "$(getent shadow "$ACCOUNT" | cut -d: -f2)" = '*' ] || usermod --password '*' "$ACCOUNT"
}

# -------------------------------------------------------------------------------- install
say "installing the breakglass forced-command account for VM $VMID${R:+ into scratch root $R}"
[ "$AS_ROOT" = 1 ] || say 'not running as root: files keep your ownership (on a real host all of them are root-owned)'

ensure_dir "$LIB_DIR" 0755 0:0
put "$DISPATCHER" 0755 0:0 "$HERE/pve-dispatch"

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
  if printf '%s\n' "$effective" | grep -Eq '^(allowusers|allowgroups|denyusers|denygroups) '; then
    warn "sshd has AllowUsers/AllowGroups/DenyUsers/DenyGroups: make sure they admit $ACCOUNT"
  fi
  if [ "$dropin_changed" = 1 ]; then
    if systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service 2>/dev/null; then
      say 'reloaded sshd (existing sessions are kept)'
    else
      warn 'could not reload sshd: run "systemctl reload ssh" to apply the drop-in'
    fi
  fi
fi

say "done. client key: $KEY_FINGERPRINT, allowed from $FROM"
hostkey=$R/etc/ssh/ssh_host_ed25519_key.pub
if [ -f "$hostkey" ] && command -v ssh-keygen >/dev/null 2>&1; then
  say "this host's key to pin in the client: $(ssh-keygen -l -f "$hostkey")"
fi
say "next: from the client, ssh -i <private key> $ACCOUNT@<this host> status"
if [ -n "$NOT_EFFECTIVE" ]; then die "installed, but not in effect: $NOT_EFFECTIVE"; fi
exit 0
