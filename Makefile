# aside -- the two commands a new user needs, and a few more.
#   make run     install what is missing, build, run the main job: aside serve,
#                the users API on the embedded default (sqlite:aside.db, mem://)
#   make test    install what is missing, build, start private Redis and
#                PostgreSQL servers, run every test (a normal build, then
#                AddressSanitizer+UBSan, then ThreadSanitizer built with
#                clang), stop them
#   make bench   the benchmarks of docs/performance.md, beside their peers
#                (Caffeine, nginx, a raw Redis GET)
#   make fuzz    fuzz the input parsers (JSON, times, URLs) with libFuzzer
#   make install PREFIX=/usr/local
#   make format  clang-format every C file
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local
CMAKE  := cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: run test test-plain test-asan test-tsan test-fuzz bench fuzz install format clean bootstrap build

bootstrap:
	@./scripts/bootstrap

build: bootstrap
	@$(CMAKE) -S . -B build >/dev/null
	@cmake --build build -j $(JOBS)

run: build
	./build/aside serve

test: bootstrap
	./scripts/with-services $(MAKE) --no-print-directory test-plain test-asan test-tsan test-fuzz
	@echo "make test: all tests passed (plain, ASan+UBSan, TSan, 10 s of fuzzing)"

test-plain: build
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan: bootstrap
	@$(CMAKE) -S . -B build-asan -DASIDE_SANITIZE_ADDRESS=ON -DASIDE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS) -LE install

# ThreadSanitizer's build uses clang, so that make test also compiles every
# file with the second compiler a fresh machine has, warnings as errors.
test-tsan: bootstrap
	@CC=clang $(CMAKE) -S . -B build-clang-tsan -DASIDE_SANITIZE_THREAD=ON -DASIDE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-clang-tsan -j $(JOBS)
	cd build-clang-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		ctest --output-on-failure -L concurrency

# The fuzz target built and run briefly, so that it keeps building (make
# fuzz runs it longer).
test-fuzz: bootstrap
	./tests/fuzz/run.sh 10

bench:
	@./scripts/bootstrap bench
	@cmake -DCMAKE_BUILD_TYPE=Release -DASIDE_BUILD_TESTS=OFF -S . -B build-rel >/dev/null
	@cmake --build build-rel -j $(JOBS)
	./bench/run-l1.sh build-rel
	./bench/run-http.sh build-rel
	./scripts/with-services sh -c 'build-rel/bench/bench_l2 "$$ASIDE_TEST_REDIS_URL/5" 11 10000'

fuzz: bootstrap
	./tests/fuzz/run.sh $${FUZZ_SECONDS:-60}

install: build
	cmake --install build --prefix $(PREFIX)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-clang-tsan build-rel build-fuzz
