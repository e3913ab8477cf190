#!/usr/bin/env bash
# readme_test.sh BUILD_DIR: keeps README.md's command blocks true. Starts a
# fresh stack with deploy/local/up.sh (the services built in BUILD_DIR, on
# free ports, in a temp STACK_DIR), takes every ```sh block that README.md
# marks with a `<!-- doc-test -->` line just above it, and runs them in order
# in one bash from the repository's root, as a reader pasting them into one
# terminal would: with the default ports and `.stack/` rewritten to the
# test's. Each block must end with exit code 0, print no error a correct
# service never gives (UNAVAILABLE, INTERNAL, UNKNOWN) and no shell error,
# and its output must have the shape its comments show: every "key": of an
# expected answer (a comment line holding a JSON object) must appear in what
# the block printed, and every expected metric sample (a comment line
# `name{labels} value`) must have its name start a printed line. Then the
# whole run again, since the README promises its
# blocks run twice. KEEP=1 keeps the temp dir.
#
# readme_test.sh BUILD_DIR --tls: the blocks marked `<!-- doc-test: tls -->`
# instead, against a stack from up.sh --tls (mTLS everywhere).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$(cd "${1:?usage: readme_test.sh BUILD_DIR [--tls]}" && pwd)
MARKER="<!-- doc-test -->"
up_args=()
if [[ "${2:-}" == --tls ]]; then
    MARKER="<!-- doc-test: tls -->"
    up_args=(--tls)
fi
export MARKER

say() { echo "readme_test.sh: $*"; }
die() {
    echo "readme_test.sh: FAIL: $*" >&2
    exit 1
}

# shellcheck source=../support/up_stack.sh source-path=SCRIPTDIR
. "$ROOT/tests/support/up_stack.sh"
up_stack_start readme-test 0 "${up_args[@]}"

# The marked blocks as one script, each between markers; the README's ports and .stack rewritten.
python3 - "$ROOT/README.md" "$STACK_DIR" >"$STACK_DIR/blocks.sh" <<'PY'
import os, re, sys
readme, stack = sys.argv[1], sys.argv[2]
env = os.environ
subst = {
    "127.0.0.1:50051": "127.0.0.1:" + env["LOCK_PORT"],
    "127.0.0.1:50052": "127.0.0.1:" + env["BALANCE_PORT"],
    "127.0.0.1:50053": "127.0.0.1:" + env["RESERVATION_PORT"],
    "127.0.0.1:50151": "127.0.0.1:" + env["LOCK_METRICS_PORT"],
    "127.0.0.1:50152": "127.0.0.1:" + env["BALANCE_METRICS_PORT"],
    "127.0.0.1:50153": "127.0.0.1:" + env["RESERVATION_METRICS_PORT"],
}
lines = open(readme, encoding="utf-8").read().split("\n")
n = 0
for i, line in enumerate(lines):
    if line.strip() != env["MARKER"]:
        continue
    if i + 1 >= len(lines) or lines[i + 1].strip() != "```sh":
        sys.exit(f"README.md:{i + 1}: {env['MARKER']} is not right above a ```sh block")
    body = []
    for j in range(i + 2, len(lines)):
        if lines[j].strip() == "```":
            break
        body.append(lines[j])
    else:
        sys.exit(f"README.md:{i + 2}: the block never ends")
    text = "\n".join(body)
    for a, b in subst.items():
        text = text.replace(a, b)
    text = re.sub(r"(?<![\w/])\.stack/", stack + "/", text)
    n += 1
    print(f"echo '@@block {n} {i + 3}'")
    print(text)
    print(f"echo \"@@rc $?\"")
if n == 0:
    sys.exit(f"README.md marks no block with {env['MARKER']}")
PY

# check_run OUT: every block's verdict; fails on the first bad one.
check_run() {
    python3 - "$ROOT/README.md" "$1" <<'PY'
import re, sys
readme, out = sys.argv[1], sys.argv[2]
lines = open(readme, encoding="utf-8").read().split("\n")
text = open(out, encoding="utf-8", errors="replace").read()
parts = re.split(r"^@@block (\d+) (\d+)\n", text, flags=re.M)
bad = []
blocks = 0
for k in range(1, len(parts), 3):
    num, start, chunk = int(parts[k]), int(parts[k + 1]), parts[k + 2]
    blocks += 1
    m = re.search(r"^@@rc (\d+)$", chunk, flags=re.M)
    printed = chunk[: m.start()] if m else chunk
    where = f"README.md block {num} (line {start})"
    if m is None:
        bad.append(f"{where}: the block never finished")
        continue
    if m.group(1) != "0":
        bad.append(f"{where}: its last command exited {m.group(1)}")
    for err in ("unavailable", "internal", "unknown"):
        if re.search(r'"code":\s*"%s"' % err, printed):
            bad.append(f"{where}: a call answered {err.upper()}")
    for err in ("command not found", "syntax error", "No such file or directory", "unbound variable"):
        if err in printed:
            bad.append(f"{where}: the shell said \"{err}\"")
    # The expected answers: comment lines of the block holding a JSON object.
    body = []
    for j in range(start - 1, len(lines)):
        if lines[j].strip() == "```":
            break
        body.append(lines[j])
    want = set()
    for line in body:
        c = line.split("#", 1)
        if len(c) == 2 and "{" in c[1] and "}" in c[1] and line.lstrip().startswith("#"):
            obj = c[1][c[1].index("{") : c[1].rindex("}") + 1]  # the answer, not the prose after
            want |= set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:', obj))
    missing = sorted(k for k in want if not re.search(r'"%s"\s*:' % re.escape(k), printed))
    # Expected metric samples (`# name{labels} value`): the name must start a printed line.
    for line in body:
        mm = re.match(r"\s*#\s+([a-z_][a-z0-9_]*)(\{[^}]*\})?\s+[-+0-9.eE]+\s*$", line)
        if mm:
            want.add(mm.group(1))
            if not re.search(r"^%s[{ ]" % re.escape(mm.group(1)), printed, flags=re.M):
                missing.append(mm.group(1))
    if missing:
        bad.append(f"{where}: the answers lack {', '.join(missing)}")
    print(f"readme_test.sh: block {num} (line {start}): {'ok' if not missing and m.group(1) == '0' else 'BAD'}"
          f" ({len(want)} keys checked)")
if blocks == 0:
    bad.append("no block ran")
for b in bad:
    print("readme_test.sh: FAIL: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

for run in 1 2; do
    say "run $run of the README's marked blocks"
    # Through a pipe, not into the file: a block's `tee /dev/stderr` reopens its stderr, and a
    # reopened file would be written from its start.
    (cd "$ROOT" && bash "$STACK_DIR/blocks.sh" 2>&1 | cat) >"$STACK_DIR/run$run.out" || true
    check_run "$STACK_DIR/run$run.out" || {
        say "what run $run printed: $STACK_DIR/run$run.out (KEEP=1 keeps it)"
        tail -n 40 "$STACK_DIR/run$run.out" >&2
        exit 1
    }
done
say "PASS"
