#!/bin/sh
# shellcheck shell=sh disable=SC2034,SC2154
# Part of pve-dispatch (sourced): JSON output helpers.
# ---------------------------------------------------------------------------- JSON helpers
# json_str: stdin -> a JSON string literal. Control characters other than tab/CR/LF become '?'.
json_str() {
  awk 'BEGIN { ORS = ""; printf "\"" }
       { if (NR > 1) printf "\\n"
         gsub(/\\/, "&&"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r")
         gsub(/[\001-\037\177]/, "?"); print }
       END { printf "\"" }'
}
json_of() { printf '%s' "$1" | json_str; }
# json_lines: stdin -> JSON array of strings, one per non-empty line.
json_lines() {
  awk 'BEGIN { ORS = ""; printf "[" }
       NF { gsub(/\\/, "&&"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "")
            gsub(/[\001-\037\177]/, "?"); printf "%s\"%s\"", (n++ ? "," : ""), $0 }
       END { printf "]" }'
}
json_num_or_null() { case ${1:-} in '' | *[!0-9]*) printf null ;; *) printf '%s' "$1" ;; esac; }
json_bool() { if [ "$1" = 1 ]; then printf true; else printf false; fi; }

now_ms() { date +%s%3N; }
now_iso() { date -u +%Y-%m-%dT%H:%M:%SZ; }

