#!/usr/bin/env bash
# Runs one fuzz target (or all) for a bounded time with cargo-fuzz on nightly.
#
#   fuzz/run.sh [TARGET] [SECONDS]     # default: every target, 300 s each
#
# The corpus grows in fuzz/corpus/TARGET (git-ignored), seeded from fuzz/seeds/TARGET. A crash
# leaves its input in fuzz/artifacts/TARGET/; copy it to tests/fuzz-regressions/TARGET/ so the
# normal `cargo test` replays it forever after.
set -euo pipefail
cd "$(dirname "$0")"
targets=(admission_review conversion_review policy_file)
[[ $# -ge 1 && "$1" != all ]] && targets=("$1")
seconds="${2:-300}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  mkdir -p "corpus/${target}"
  echo "== ${target}: ${seconds}s"
  cargo +nightly fuzz run "${target}" "corpus/${target}" "seeds/${target}" -- \
    -max_total_time="${seconds}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
