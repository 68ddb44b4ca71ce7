#!/usr/bin/env bash
# Runs every test: unit, golden, integration (real sockets, the real binary).
# Tests that need an outside service are marked #[ignore] and run here with --include-ignored,
# after this script has installed and started what they need.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked -- --include-ignored "$@"
