#!/usr/bin/env bash
# features_numpy.sh: per-feature stability, mutual matches, clusters and consensus features
# (src/metrics/features.c) against numpy on small random and planted dictionaries; see features_numpy.py.
# Needs HUSAI_BUILD_DIR (test_features is the driver) and /usr/bin/python3 with numpy.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init features_numpy --no-mpi
[ -x "$HUSAI_BUILD_DIR/tests/test_features" ] || fail "no $HUSAI_BUILD_DIR/tests/test_features"
timeout 300 "$PY" "$HERE/features_numpy.py" "$HUSAI_BUILD_DIR/tests/test_features" "$tmp" || fail "numpy comparison failed"
step "OK"
