# MPI and script tests, one line each. Unit tests (tests/test_*.c) need no line here.
husai_script_test(ci_cli ci_cli.sh)
husai_script_test(sweep_smoke_np2 sweep_smoke.sh)
husai_script_test(sweep_determinism sweep_determinism.sh)
husai_script_test(sweep_errors sweep_errors.sh)
husai_script_test(protocol_calibrate protocol_calibrate.sh)
husai_script_test(protocol_consistency protocol_consistency.sh)
husai_script_test(sweep_resume sweep_resume.sh)
husai_script_test(sweep_merge sweep_merge.sh)
