# shellcheck shell=sh
# shellcheck disable=SC2034,SC2154 # a library: its variables are set and read by the scripts that source it
# Breakglass: the helpers host/pve/install.sh and host/devvm/install.sh share. Sourced (never
# run) by each of them from ../lib next to its own directory, after it has set ME (its name in
# messages), ACCOUNT and GECOS; it defines functions only, plus KEY_TYPES.
#
# The helpers read ME, ACCOUNT, FROM and R, and set: R (the scratch root, '' for /), KEY,
# KEY_FINGERPRINT, AS_ROOT, STAGE, TMP, CHANGED, ACCOUNT_GID.

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
# The sourcing script's header comment, from its second line to its first non-comment line.
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

# ------------------------------------------------------------------------------- options
need_value() { # OPTION REMAINING_ARG_COUNT NEXT_ARG
  [ "$2" -ge 2 ] || refuse "$1" 'needs a value'
  case $3 in -*) refuse "$1" "needs a value (got option '$(shown "$3")')" ;; esac
}

# ---------------------------------------------------------------- input checks (no writes)
# check_root DIR: the --root value. Sets R: DIR's real path, or '' for /.
check_root() {
  [ -n "$1" ] || refuse --root 'must not be empty'
  [ -d "$1" ] || refuse --root "$(shown "$1"): no such directory"
  R=$(cd "$1" && pwd -P)
  [ "$R" != / ] || R=''
}

# check_from FROM_SET: FROM (given when FROM_SET is 1) holds IPv4/IPv6 addresses or CIDR blocks only. sshd silently matches nothing for a
# block with host bits set (10.0.0.5/24), so such a block is refused here rather than at 3 a.m.
check_from() {
  [ "$1" = 1 ] || refuse --from "is required: the comma-separated addresses or CIDR blocks the breakglass client connects from"
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

# check_public_key FILE: exactly one plain OpenSSH public key line. Sets KEY and KEY_FINGERPRINT.
# The file's content is never echoed: if it is a private key by mistake, it stays unprinted.
check_public_key() {
  f=$1
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

# check_as_root: sets AS_ROOT to 1 when running as root, else 0.
check_as_root() {
  AS_ROOT=0
  if [ "$(id -u)" = 0 ]; then AS_ROOT=1; fi
}

# ------------------------------------------------------------------------- writing helpers
# stage_begin: a staging dir STAGE for the composed files, removed (with a half-written TMP)
# on exit.
stage_begin() {
  STAGE=$(mktemp -d "${TMPDIR:-/tmp}/breakglass-install.XXXXXX")
  TMP=''
  trap cleanup EXIT
  trap 'exit 1' HUP INT TERM
}
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  if [ -n "$TMP" ]; then rm -f "$TMP"; fi
  rm -rf "$STAGE"
}

# set_attrs PATH MODE UID:GID — owners only when running as root (a scratch install by a
# normal user keeps the user's ownership; on a real host the owners are root or the account).
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

# check_staged_keys: ssh-keygen (where installed) must parse the composed authorized_keys.
check_staged_keys() {
  if command -v ssh-keygen >/dev/null 2>&1; then
    ssh-keygen -l -f "$STAGE/authorized_keys" >/dev/null 2>&1 || die 'ssh-keygen cannot parse the composed authorized_keys line'
  fi
}

# ------------------------------------------------------------------------------ the account
# The --root stand-in for useradd/usermod: the account as lines in DIR/etc/group,
# DIR/etc/passwd and DIR/etc/shadow (each created when absent), keeping ids. A script's
# scratch_account calls scratch_group, stages $STAGE/passwd itself, then scratch_finish.
scratch_db() { # FILE DEFAULT_MODE: put the staged FILE, keeping an existing file's mode/owner
  f=$R/etc/$1
  if [ -f "$f" ]; then put "/etc/$1" "$(stat -c %a "$f")" "$(stat -c %u:%g "$f")" "$STAGE/$1"; else put "/etc/$1" "$2" 0:0 "$STAGE/$1"; fi
}
db_path() { if [ -f "$R/etc/$1" ]; then echo "$R/etc/$1"; else echo "$STAGE/$1.empty"; fi; }
# free_id FILE FIRST LAST [PREFERRED]: PREFERRED if unused in FILE's third field, else the
# first unused numeric id counting from FIRST to LAST (down when FIRST > LAST).
free_id() {
  awk -F: -v lo="$2" -v hi="$3" -v pref="${4-}" '{ used[$3] = 1 }
    END { if (pref != "" && !(pref in used)) { print pref; exit }
          step = (lo + 0 <= hi + 0 ? 1 : -1)
          for (i = lo + 0; i != hi + step; i += step) if (!(i in used)) { print i; exit } }' "$1"
}
has_account() { awk -F: -v u="$ACCOUNT" '$1 == u { found = 1 } END { exit !found }' "$1"; } # DB_FILE
# scratch_group FIRST LAST: stage the group file with the account's group (a new one takes
# the first free gid from FIRST to LAST). Sets ACCOUNT_GID.
scratch_group() {
  mkdir -p "$R/etc"
  for db in group passwd shadow; do [ -f "$R/etc/$db" ] || : >"$STAGE/$db.empty"; done
  ACCOUNT_GID=$(awk -F: -v u="$ACCOUNT" '$1 == u { print $3; exit }' "$(db_path group)")
  if [ -z "$ACCOUNT_GID" ]; then
    ACCOUNT_GID=$(free_id "$(db_path group)" "$1" "$2")
    { cat "$(db_path group)"; printf '%s:x:%s:\n' "$ACCOUNT" "$ACCOUNT_GID"; } >"$STAGE/group"
  else
    cat "$(db_path group)" >"$STAGE/group"
  fi
}
# scratch_finish: stage the shadow file (password field '*'), then write all three.
scratch_finish() {
  if has_account "$(db_path shadow)"; then
    awk -F: -v OFS=: -v u="$ACCOUNT" '$1 == u { $2 = "*" } { print }' "$(db_path shadow)" >"$STAGE/shadow"
  else
    { cat "$(db_path shadow)"; printf '%s:*:%s:0:99999:7:::\n' "$ACCOUNT" "$(($(date +%s) / 86400))"; } >"$STAGE/shadow"
  fi
  scratch_db group 0644
  scratch_db passwd 0644
  scratch_db shadow 0640
  say "--root: account $ACCOUNT written to $R/etc/{passwd,group,shadow} (useradd not called)"
}

# real_password: '*': no password can match, and unlike '!' sshd does not treat the account
# as locked.
real_password() {
  [ "$(getent shadow "$ACCOUNT" | cut -d: -f2)" = '*' ] || usermod --password '*' "$ACCOUNT"
}

# -------------------------------------------------------------------------------- the end
# warn_sshd_allow EFFECTIVE: the account may be kept out by sshd's allow/deny lists.
warn_sshd_allow() {
  if printf '%s\n' "$1" | grep -Eq '^(allowusers|allowgroups|denyusers|denygroups) '; then
    warn "sshd has AllowUsers/AllowGroups/DenyUsers/DenyGroups: make sure they admit $ACCOUNT"
  fi
}

# finish NEXT [NOT_EFFECTIVE]: the closing messages (NEXT: what to run from the client), then
# exit 0, or 1 with the reason NOT_EFFECTIVE when it is given: installed but not in effect.
finish() {
  say "done. client key: $KEY_FINGERPRINT, allowed from $FROM"
  hostkey=$R/etc/ssh/ssh_host_ed25519_key.pub
  if [ -f "$hostkey" ] && command -v ssh-keygen >/dev/null 2>&1; then
    say "this host's key to pin in the client: $(ssh-keygen -l -f "$hostkey")"
  fi
  say "next: from the client, $1"
  if [ -n "${2-}" ]; then die "installed, but not in effect: $2"; fi
  exit 0
}
