#!/usr/bin/env bash
# Mutation testing of the pure modules with cargo-mutants: each mutant (an
# operator flipped, a body replaced by a default...) must make some unit
# test fail; the ones that do not ("missed") are gaps in the tests. Slow
# (one build and test run per mutant), so it is not part of CI or
# scripts/test.sh; run it by hand.
#
#   scripts/mutants.sh                         # all the pure modules below
#   scripts/mutants.sh src/presence/keys.rs    # only these files
#   JOBS=4 scripts/mutants.sh src/names.rs     # mutants built in parallel
#
# With one job the build goes to target/mutants-build (MUTANTS_TARGET_DIR
# to move it).
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`; written
# against 27.x). Results: target/mutants.out/ (missed.txt, caught.txt,
# unviable.txt, timeout.txt, outcomes.json).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "cargo-mutants is missing: cargo install --locked cargo-mutants" >&2
  exit 1
fi

# Code without I/O, whose unit tests can judge it alone.
files=(
  src/documents/ot.rs
  src/auth.rs
  src/realtime/limits.rs
  src/presence/keys.rs
  src/edge/escaped_names.rs
  src/store/memory.rs
  src/edge/ws_frames.rs
  src/names.rs
)
if [ $# -gt 0 ]; then
  files=("$@")
fi
args=()
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "no such file: $f" >&2; exit 1; }
  args+=(--file "$f")
done

# A proptest failure would otherwise be saved under proptest-regressions/
# in the scratch copy, which later mutants share, and replayed first: one
# mutant's failing seed must not help the next.
export PROPTEST_DISABLE_FAILURE_PERSISTENCE=1
# One job: a target dir of its own, kept between runs, so the dependencies
# are built once (the first run takes that much longer), not in each
# scratch copy. Never the project's target/ (CARGO_TARGET_DIR is not used):
# cargo would take the last mutant's build there as up to date for the real
# sources (same crate, older files), and later test runs would run mutated
# code. Several jobs: each copy builds in its own, for the same reason.
jobs="${JOBS:-1}"
if [ "$jobs" -gt 1 ]; then
  unset CARGO_TARGET_DIR
else
  export CARGO_TARGET_DIR="${MUTANTS_TARGET_DIR:-$PWD/target/mutants-build}"
fi

status=0
# --cargo-arg=--lib: build and run the library's unit tests only (the
# integration tests need PostgreSQL, Redis and minutes per run), in the
# build step too, which `-- --lib` would not reach. --gitignore: leave
# node_modules and other ignored files out of the scratch copy.
cargo mutants \
  --jobs "$jobs" \
  --cargo-arg=--lib \
  --gitignore=true \
  --output target \
  "${args[@]}" || status=$?

# cargo-mutants exits 2 when mutants were missed, 3 on timeouts: still
# show what was missed before passing its status on.
out=target/mutants.out
if [ -s "$out/missed.txt" ]; then
  echo
  echo "missed ($out/missed.txt):"
  cat "$out/missed.txt"
fi
for kind in caught missed unviable timeout; do
  printf '%-9s %s\n' "$kind" "$(wc -l <"$out/$kind.txt" 2>/dev/null || echo 0)"
done
exit "$status"
