#!/usr/bin/env bash
# Profile-guided build of tollgate: build instrumented, run it under the wire benchmark's traffic
# (`load train`), then rebuild with LLVM laying out and inlining by what that run executed.
#
#   scripts/pgo.sh build            the server, at target/pgo/use/release/tollgate (the image's)
#   scripts/pgo.sh bench [ARGS...]  the wire benchmark (`cargo bench --bench load -- ARGS`),
#                                   tollgate and the floor server both built from one profile
#
# Why: on the wire a review runs on caches the kernel's TCP and TLS work has just emptied, so
# its cost is mostly the code lines it fetches; a profile moves the cold branches out of the
# request path's lines (README, "Benchmarks", for the figures).
#
# Needs llvm-profdata of the LLVM rustc was built with: `rustup component add llvm-tools`, or a
# distribution's llvm-N package for the major version `rustc -vV` names.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  build | bench) shift ;;
  *)
    echo "usage: scripts/pgo.sh build | bench [benchmark arguments]" >&2
    exit 2
    ;;
esac

pgo="$PWD/target/pgo"
raw="$pgo/raw"

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=""
for candidate in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata \
  "llvm-profdata-$llvm_major" llvm-profdata; do
  if command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" --version 2>/dev/null | grep -q "LLVM version $llvm_major\."; then
    profdata=$candidate
    break
  fi
done
if [[ -z "$profdata" ]]; then
  echo "scripts/pgo.sh: no llvm-profdata for LLVM $llvm_major (rustc's);" \
    "run 'rustup component add llvm-tools' or install llvm-$llvm_major" >&2
  exit 1
fi

# The path of the `load` benchmark executable a `cargo bench --no-run` built.
bench_executable() {
  grep -o '"executable":"[^"]*/load-[^"]*"' | tail -n 1 | sed 's/^"executable":"//; s/"$//'
}

# Each build below gets exactly the flags it names.
unset RUSTFLAGS

echo "== instrumented build"
rm -rf "$raw"
instrumented="-Cprofile-generate=$raw"
if [[ "$mode" == bench ]]; then
  load=$(RUSTFLAGS=$instrumented cargo bench --locked --bench load --no-run \
    --target-dir "$pgo/generate" --message-format=json-render-diagnostics | bench_executable)
  trainee=()
else
  RUSTFLAGS=$instrumented cargo build --locked --release --bin tollgate --target-dir "$pgo/generate"
  trainee=("$pgo/generate/release/tollgate")
  # The driver itself need not be instrumented (nor built with the server's flags).
  load=$(cargo bench --locked --bench load --no-run --message-format=json-render-diagnostics |
    bench_executable)
fi
# Build scripts and proc macros ran instrumented too: only the training's counts are wanted.
rm -rf "$raw"

echo "== training run"
"$load" train "${trainee[@]}"
"$profdata" merge --sparse -o "$pgo/merged.profdata" "$raw"
# Named by its contents: cargo rebuilds when the flags change, not when a file they name does.
profile="$pgo/tollgate-$(sha256sum "$pgo/merged.profdata" | cut -c1-16).profdata"
rm -f "$pgo"/tollgate-*.profdata
mv "$pgo/merged.profdata" "$profile"

echo "== optimised build"
# A function changed since the profile was taken is built without it; LLVM need not say so.
optimised="-Cprofile-use=$profile -Cllvm-args=-no-pgo-warn-mismatch"
if [[ "$mode" == bench ]]; then
  RUSTFLAGS=$optimised cargo bench --locked --bench load --target-dir "$pgo/use" -- --build pgo "$@"
else
  RUSTFLAGS=$optimised cargo build --locked --release --bin tollgate --target-dir "$pgo/use"
  echo "built $pgo/use/release/tollgate"
fi
