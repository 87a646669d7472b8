# fastnet — see README.md.
CARGO ?= cargo
FASTNET := target/release/fastnet

.PHONY: all build deps lint unit fuzz e2e test demo bench clean deb

all: build

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --release --workspace --exclude fastnet-e2e
	python3 scripts/bench/test_report.py

# End-to-end tests need root (namespaces, XDP); each test makes its own topology.
e2e: build
	$(CARGO) test --release -p fastnet-e2e -- --test-threads=1

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
