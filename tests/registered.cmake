# MPI and script tests, one line each. Unit tests (tests/test_*.c) need no line here.
husai_script_test(ci_cli ci_cli.sh)
