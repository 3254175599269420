# husai's front door.
#   make demo   install what is missing, build, run the default sweep on the shipped data (2 ranks)
#   make test   install what is missing, build, run the whole ctest suite, then again
#               under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   make bench  build and print the benchmark figures
BUILD ?= build
ASAN_BUILD ?= build-asan
NP ?= 2
DEBIAN_PACKAGES = build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools \
                  libopenblas-dev libcmocka-dev libinih-dev libcjson-dev libxxhash-dev libdnnl-dev python3-numpy python3-h5py \
                  python3-xxhash \
                  slurmctld slurmd slurm-client munge iproute2 strace
APT = apt-get -o DPkg::Lock::Timeout=600
MPIRUN = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe -np $(NP)

.PHONY: all deps configure build test test-fast test-asan demo bench format clean

all: build

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing:$$missing"; \
	  $$sudo $(APT) update && DEBIAN_FRONTEND=noninteractive $$sudo $(APT) install -y --no-install-recommends $$missing; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -DHUSAI_WERROR=ON

build: configure
	cmake --build $(BUILD) -j 2

test: test-fast test-asan

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j 2

# The same suite on a sanitized build (Open MPI's by-design leaks suppressed in tests/lsan.supp);
# the real-Slurm test and hangs.sh (signals, kills and launcher behaviour, ~70 s here but ~300 s
# sanitized; the stop and refusal paths it drives run sanitized in sweep_resume and faults) already
# ran above and are not repeated, keeping `make test` under 15 minutes.
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DHUSAI_WERROR=ON -DHUSAI_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j 2
	cd $(ASAN_BUILD) && ctest --output-on-failure -j 2 -E 'slurm|^hangs$$'

demo: build
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
