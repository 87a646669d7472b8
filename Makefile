# fastnet — see README.md.
CARGO ?= cargo
FASTNET := target/release/fastnet

.PHONY: all build deps lint unit fuzz e2e compat compat-quick test demo bench clean deb

all: build

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	./scripts/check-no-timing-asserts.sh

unit:
	$(CARGO) test --release --workspace --exclude fastnet-e2e
	python3 scripts/bench/test_report.py

# End-to-end tests need root (namespaces, XDP); each test makes its own topology.
# Every suite runs on a veth made with the kernel's defaults (one queue in use of one
# per CPU allocated: what `ip link add` gives users); the fast-path suites run again on
# one with fewer queues in use than allocated (2 of 4, `ethtool -L`) and on
# `fastnet netns --queues 1`'s. FASTNET_TOPOLOGY picks the layout (see netns.rs).
FAST_PATH_SUITES := --test shim_apps --test shim_process --test xdp_tcp --test xdp_udp \
	--test loopback --test pcap --test stat --test server_shapes --test splice --test ipv6
e2e: build
	FASTNET_TOPOLOGY=default $(CARGO) test --release -p fastnet-e2e -- --test-threads=1
	FASTNET_TOPOLOGY=2of4 $(CARGO) test --release -p fastnet-e2e $(FAST_PATH_SUITES) -- --test-threads=1
	FASTNET_TOPOLOGY=1 $(CARGO) test --release -p fastnet-e2e $(FAST_PATH_SUITES) -- --test-threads=1

# The compatibility matrix (tests/tests/compat_matrix.rs): every row, and
# docs/COMPATIBILITY.md written from the run. `e2e` runs its quick rows.
# FASTNET_TOPOLOGY picks the queue layout (default: the kernel's default veth).
compat: deps build
	FASTNET_COMPAT=full $(CARGO) test --release -p fastnet-e2e --test compat_matrix -- --nocapture

compat-quick: build
	$(CARGO) test --release -p fastnet-e2e --test compat_matrix -- --nocapture

# Every stack fuzz target for ~20 s (cargo-fuzz on stable via RUSTC_BOOTSTRAP=1).
fuzz:
	./scripts/fuzz-short.sh 20

test: deps build lint unit fuzz e2e
	@echo "make test: all passed"

demo: deps build
	./scripts/demo.sh

bench: deps build
	./scripts/bench.sh

# The Debian package (cargo-deb, declared in tools/Cargo.toml): target/debian/fastnet_*.deb.
DEB_ASSETS := target/release/deb-assets
deb: build
	command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	rm -rf $(DEB_ASSETS)
	$(FASTNET) gen-docs --out $(DEB_ASSETS)
	gzip -9n $(DEB_ASSETS)/man/*.1
	$(CARGO) deb -p fastnet-tools --no-build

clean:
	$(CARGO) clean
	-$(FASTNET) netns gc 2>/dev/null
