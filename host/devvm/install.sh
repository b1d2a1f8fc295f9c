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
KEY_OPTIONS='no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty'
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
ROOT_OPT=/ KEY_FILE='' FROM='' FROM_SET=0
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
    -h | --help) usage; exit 0 ;;
    *) refuse "$(shown "$1")" 'unknown option (known: --public-key --from --root)' ;;
  esac
done

# ---------------------------------------------------------------- input checks (no writes)
# (The same checks as host/pve/install.sh: each script is copied to its host on its own.)
check_root() {
  [ -n "$ROOT_OPT" ] || refuse --root 'must not be empty'
  [ -d "$ROOT_OPT" ] || refuse --root "$(shown "$ROOT_OPT"): no such directory"
  R=$(cd "$ROOT_OPT" && pwd -P)
  [ "$R" != / ] || R=''
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
check_from
check_public_key

AS_ROOT=0
[ "$(id -u)" = 0 ] && AS_ROOT=1
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
# normal user keeps the user's ownership).
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
# then rename).
put() {
  dest=$R$1
  TMP=$(mktemp "$dest.new.XXXXXX")
  cat "$4" >"$TMP"
  set_attrs "$TMP" "$2" "$3"
  if [ -f "$dest" ] && cmp -s "$TMP" "$dest"; then
    rm -f "$TMP"
    set_attrs "$dest" "$2" "$3"
    say "unchanged $1 ($2)"
  else
    mv -f "$TMP" "$dest"
    say "installed $1 ($2)"
  fi
  TMP=''
}

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
if command -v ssh-keygen >/dev/null 2>&1; then
  ssh-keygen -l -f "$STAGE/authorized_keys" >/dev/null 2>&1 || die 'ssh-keygen cannot parse the composed authorized_keys line'
fi

# ------------------------------------------------------------------------------ the account
# scratch_account: the --root stand-in for useradd/usermod. Adds or updates the account in
# DIR/etc/group, DIR/etc/passwd and DIR/etc/shadow (each created when absent), keeping ids
# and an existing home. Sets ACCOUNT_UID, ACCOUNT_GID and ACCOUNT_HOME.
scratch_db() { # FILE DEFAULT_MODE: put the staged FILE, keeping an existing file's mode/owner
  f=$R/etc/$1
  if [ -f "$f" ]; then put "/etc/$1" "$(stat -c %a "$f")" "$(stat -c %u:%g "$f")" "$STAGE/$1"; else put "/etc/$1" "$2" 0:0 "$STAGE/$1"; fi
}
db_path() { if [ -f "$R/etc/$1" ]; then echo "$R/etc/$1"; else echo "$STAGE/$1.empty"; fi; }
free_id() { # FILE LOW HIGH [PREFERRED]: the lowest numeric id unused in FILE's third field
  awk -F: -v lo="$2" -v hi="$3" -v pref="${4-}" '{ used[$3] = 1 }
    END { if (pref != "" && !(pref in used)) { print pref; exit }
          for (i = lo; i <= hi; i++) if (!(i in used)) { print i; exit } }' "$1"
}
scratch_account() {
  mkdir -p "$R/etc"
  for db in group passwd shadow; do [ -f "$R/etc/$db" ] || : >"$STAGE/$db.empty"; done
  ACCOUNT_GID=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $3; exit }' "$(db_path group)")
  if [ -z "$ACCOUNT_GID" ]; then
    ACCOUNT_GID=$(free_id "$(db_path group)" 1000 59999)
    { cat "$(db_path group)"; printf '%s:x:%s:\n' "$ACCOUNT" "$ACCOUNT_GID"; } >"$STAGE/group"
  else
    cat "$(db_path group)" >"$STAGE/group"
  fi
  ACCOUNT_HOME=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $6; exit }' "$(db_path passwd)")
  if [ -n "$ACCOUNT_HOME" ]; then
    ACCOUNT_UID=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $3; exit }' "$(db_path passwd)")
    awk -F: -v OFS=: -v u="$ACCOUNT" -v s="$SHELL_PATH" '$1 == u { $7 = s } { print }' "$(db_path passwd)" >"$STAGE/passwd"
  else
    ACCOUNT_HOME=$NEW_HOME
    ACCOUNT_UID=$(free_id "$(db_path passwd)" 1000 59999 "$ACCOUNT_GID")
    { cat "$(db_path passwd)"; printf '%s:x:%s:%s:%s:%s:%s\n' "$ACCOUNT" "$ACCOUNT_UID" "$ACCOUNT_GID" "$GECOS" "$ACCOUNT_HOME" "$SHELL_PATH"; } >"$STAGE/passwd"
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
  # '*': no password can match, and unlike '!' sshd does not treat the account as locked.
  [ "$(getent shadow "$ACCOUNT" | cut -d: -f2)" = '*' ] || usermod --password '*' "$ACCOUNT"
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
    if printf '%s\n' "$effective" | grep -Eq '^(allowusers|allowgroups|denyusers|denygroups) '; then
      warn "sshd has AllowUsers/AllowGroups/DenyUsers/DenyGroups: make sure they admit $ACCOUNT"
    fi
  fi
fi

say "done. client key: $KEY_FINGERPRINT, allowed from $FROM"
hostkey=$R/etc/ssh/ssh_host_ed25519_key.pub
if [ -f "$hostkey" ] && command -v ssh-keygen >/dev/null 2>&1; then
  say "this host's key to pin in the client: $(ssh-keygen -l -f "$hostkey")"
fi
say "next: from the client, ssh -i <private key> $ACCOUNT@<devvm> sudo -n true"
if [ -n "$NOT_EFFECTIVE" ]; then die "installed, but not in effect: $NOT_EFFECTIVE"; fi
exit 0
