#!/usr/bin/env bash
# The configuration reference can never go stale: docs/config.md must be exactly the output of
# `dptrain config --markdown`, and that output and `config --list` must come from the same key
# table (every key of the Markdown reference appears in --list under its section, and back).
. "$(dirname "$0")/lib.sh"

if ! "$bin" config --markdown > "$tmp/config.md" 2> "$tmp/err"; then
  bad "config --markdown failed: $(head -3 "$tmp/err")"
  finish
fi
ok "config --markdown exits 0"

if diff -u docs/config.md "$tmp/config.md" > "$tmp/diff"; then
  ok "docs/config.md is the output of config --markdown"
else
  bad "docs/config.md is stale; regenerate it with: $bin config --markdown > docs/config.md"
  head -40 "$tmp/diff"
fi

# "section key" pairs from the Markdown tables: "## [section]" headers, rows "| `key` | ..."
awk '/^## \[/ { s = substr($2, 2, length($2) - 2) }
     /^\| `/ { k = $2; gsub(/`/, "", k); print s, k }' "$tmp/config.md" | sort > "$tmp/md.keys"
"$bin" config --list > "$tmp/list.txt"
awk 'NR > 1 { print $1, $2 }' "$tmp/list.txt" | sort > "$tmp/list.keys"

n=$(wc -l < "$tmp/md.keys")
[ "$n" -ge 50 ] && ok "--markdown documents $n keys" || bad "--markdown documents only $n keys"
missing=$(comm -23 "$tmp/md.keys" "$tmp/list.keys")
[ -z "$missing" ] && ok "config --list prints every key of --markdown" || bad "missing from --list: $missing"
extra=$(comm -13 "$tmp/md.keys" "$tmp/list.keys")
[ -z "$extra" ] && ok "--markdown documents every key of --list" || bad "missing from --markdown: $extra"

for s in data model layer optimizer schedule train checkpoint sweep; do
  grep -q "^## \[$s\]$" "$tmp/config.md" || bad "no section [$s] in --markdown"
done
grep -q '^| `units` | int | required |' "$tmp/config.md" && ok "required keys say required" || bad "units not marked required"
grep -q '^| `beta` | .*alias of `alpha`' "$tmp/config.md" && ok "aliases say alias of X" || bad "beta not shown as alias of alpha"
grep -q '^| `name` | enum | `sgd` | `sgd`, `rmsprop`, `adam`, `adamw`, `lbfgs` |' "$tmp/config.md" &&
  ok "enum choices listed" || bad "optimizer name choices not listed"
grep -q '^| `momentum` | float | `0` | 0 to 0.999999 |' "$tmp/config.md" && ok "numeric ranges shown" || bad "momentum range missing"

"$bin" config --markdown extra 2> "$tmp/u.err"
[ $? -eq 2 ] && grep -q "unexpected argument 'extra'" "$tmp/u.err" && ok "config --markdown extra: exit 2" ||
  bad "config --markdown with an extra argument"

finish
