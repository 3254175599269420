# husai's front door.
#   make demo   install what is missing to build and run husai (DEMO_PACKAGES), build without the tests,
#               run the default sweep on the shipped data (2 ranks)
#   make test   install what is missing for the tests too (TEST_PACKAGES), build, run the whole ctest
#               suite, then again under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   make bench  build and print the benchmark figures
BUILD ?= build
ASAN_BUILD ?= build-asan
NP ?= 2
# What building and running husai needs (a compiler, CMake, Open MPI, parallel HDF5, OpenBLAS, inih, cJSON,
# xxHash), and what only the tests need (cmocka, python3 with numpy/h5py/xxhash, the HDF5 tools, a
# one-node Slurm, iproute2 and strace for the fault tests, Chromium for the report's browser test, oneDNN
# so the bf16 path is built and tested: husai itself builds without it, fp32 only).
DEMO_PACKAGES = build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev \
                libopenblas-dev libinih-dev libcjson-dev libxxhash-dev
TEST_PACKAGES = libcmocka-dev hdf5-tools python3-numpy python3-h5py python3-xxhash \
                slurmctld slurmd slurm-client munge iproute2 strace chromium libdnnl-dev
DEBIAN_PACKAGES = $(DEMO_PACKAGES) $(TEST_PACKAGES)
APT = apt-get -o DPkg::Lock::Timeout=600
MPIRUN = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe -np $(NP)

.PHONY: all deps deps-demo configure build test test-fast test-asan demo bench format clean

all: build

# deps (everything) and deps-demo (what the demo needs): apt-get install whichever of their packages dpkg
# does not list as installed (with sudo unless root).
deps deps-demo: PACKAGES = $(if $(filter deps-demo,$@),$(DEMO_PACKAGES),$(DEBIAN_PACKAGES))
deps deps-demo:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing:$$missing"; \
	  $$sudo $(APT) update && DEBIAN_FRONTEND=noninteractive $$sudo $(APT) install -y --no-install-recommends $$missing; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -DHUSAI_WERROR=ON -DHUSAI_TESTS=ON

build: configure
	cmake --build $(BUILD) -j 2

test: test-fast test-asan

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j 2

# The same suite on a sanitized build (Open MPI's by-design leaks suppressed in tests/lsan.supp);
# the real-Slurm test and hangs.sh (signals, kills and launcher behaviour, ~70 s here but ~300 s
# sanitized; the stop and refusal paths it drives run sanitized in sweep_resume and faults) already
# ran above and are not repeated, keeping `make test` under 15 minutes; so is the `browser` test (Chromium
# rendering report.html: no husai code runs under the sanitizers there beyond what report.sh covers), and
# the tests labelled noasan (tests/registered.cmake says why each).
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DHUSAI_WERROR=ON -DHUSAI_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j 2
	cd $(ASAN_BUILD) && ctest --output-on-failure -j 2 -E 'slurm|^hangs$$' -LE 'browser|noasan'

# The demo needs none of the test-only packages: its build leaves the tests out (-DHUSAI_TESTS=OFF).
demo: deps-demo
	cmake -S . -B $(BUILD) -DHUSAI_WERROR=ON -DHUSAI_TESTS=OFF
	cmake --build $(BUILD) -j 2
	$(MPIRUN) $(BUILD)/husai sweep jobs/demo.ini

bench: build
	cmake --build $(BUILD) --target benchmarks -j 2
	BUILD=$(BUILD) bash bench/bench.sh

format:
	clang-format -i src/*.c src/*/*.c src/*/*.h tests/*.c bench/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# ---- fuzz (tests/fuzz/, owned by the fuzzing work; see tests/fuzz/README.md) ----
# make fuzz   install clang's libFuzzer if missing, build the config and dataset fuzz targets with
#             -fsanitize=fuzzer,address,undefined in $(FUZZ_BUILD)/ and run each for FUZZ_SECONDS
#             (both at once); fails if either finds a crash, leak, UBSan report or property violation.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_PACKAGES = clang-14 libclang-rt-14-dev llvm-14
.PHONY: fuzz
fuzz: deps
	@missing=""; for p in $(FUZZ_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing:$$missing"; \
	  $$sudo $(APT) update && DEBIAN_FRONTEND=noninteractive $$sudo $(APT) install -y --no-install-recommends $$missing; \
	fi
	FUZZ_SECONDS=$(FUZZ_SECONDS) CLANG=clang-14 bash tests/fuzz/run.sh $(FUZZ_BUILD)
# ---- end fuzz ----
