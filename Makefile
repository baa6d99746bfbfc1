# The one entry point for people and CI. `make validate-example` and `make test` install what they
# need on a fresh Debian machine (nginx-light and the C build deps via apt, crossplane into a local
# venv), so a clean clone needs nothing else but a Rust toolchain.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
VENV := .tools/venv
CROSSPLANE_VERSION := 0.5.8
APT_PACKAGES := nginx-light pkg-config libssl-dev unzip git gnupg openssh-client openssl nftables
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help tools tools-apt tools-crossplane tools-kubectl build test test-real-cluster lint chart-check docs-check bench-push demo validate-example bench bench-operator fmt fuzz chaos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

tools: tools-apt tools-crossplane tools-kubectl ## Install nginx-light, C build deps, crossplane, kubectl and helm (pinned) when missing

tools-apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@/usr/sbin/nginx -v

tools-crossplane: $(VENV)/bin/crossplane

tools-kubectl: tools-apt
	@bash scripts/install-kubectl.sh

$(VENV)/bin/crossplane:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check crossplane==$(CROSSPLANE_VERSION)
	@$(VENV)/bin/crossplane --version

build: tools-apt ## Build the switchback binary (release)
	$(CARGO) build --release --bin switchback

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: tools ## The whole suite, as CI runs it: fmt, clippy, every test (real nginx, real git, crossplane)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

HELM := $(shell command -v helm 2>/dev/null || echo .tools/bin/helm)
CHART := charts/switchback

chart-check: tools-kubectl ## helm lint --strict and helm template of the chart, default and full values
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/full-values.yaml
	$(HELM) template switchback $(CHART) -n switchback >/dev/null
	$(HELM) template switchback $(CHART) -n switchback -f $(CHART)/ci/full-values.yaml >/dev/null
	@echo "chart ok (the full checks: cargo test -p switchback-tests --test helm_chart --test chart_controller)"

docs-check: tools ## The docs do what they say: the quickstart run command by command against the test API server, the ProxyRollout reference equal to the schema, no dead links
	$(CARGO) test -p switchback --lib operator::reference
	$(CARGO) test -p switchback-tests --test docs_quickstart --test docs_links

test-real-cluster: tools-kubectl ## The operator against the cluster KUBECONFIG names (creates and deletes one namespace)
	@test -n "$$KUBECONFIG" || { echo "set KUBECONFIG to a cluster you may write to"; exit 2; }
	SWITCHBACK_REAL_CLUSTER=1 $(CARGO) test -p switchback-tests --test real_cluster -- --ignored --nocapture

demo: tools-apt ## The main job: replay the outage with real nginx pods, real git and real traffic
	$(CARGO) build --bin switchback
	./target/debug/switchback demo $(DEMO_ARGS)

validate-example: tools-apt ## Validate examples/basic (passes) and examples/broken (the outage's mistake, rejected)
	$(CARGO) build --bin switchback
	./target/debug/switchback validate --require-nginx examples/basic
	@echo
	@echo '$$ switchback validate examples/broken   # the outage: a typo in an upstream server line'
	@./target/debug/switchback validate --require-nginx examples/broken; rc=$$?; \
	  if [ $$rc -eq 1 ]; then echo "(rejected with exit code 1, as it should be)"; else echo "expected exit 1, got $$rc"; exit 1; fi

bench: tools-apt ## Figures: validate timings, analysis replay, agent log ingestion rate
	$(CARGO) bench -p switchback

bench-operator: ## Operator scale at 1,000 and 10,000 pods beside issue 15's goals: RSS, reconcile p99, idle CPU, agent reads/s, API requests/s, commit -> applied, restore, 3 sharded replicas and the takeover after a SIGKILL (SCALE_SHARDS=3, 0 skips; SCALE_SIZES=1000|10000, or SCALE_PODS, SCALE_ROLLOUTS, SCALE_RESTORE_PODS)
	$(CARGO) build --release --bin switchback
	$(CARGO) bench -p switchback-tests --bench operator_scale

bench-push: tools ## Push-to-canary latency, webhook vs polling (PUSH_SAMPLES, PUSH_POLL_INTERVAL)
	$(CARGO) bench -p switchback-tests --bench push_latency

CARGO_FUZZ_VERSION := 0.13.1
CARGO_FUZZ := .tools/cargo/bin/cargo-fuzz

$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root .tools/cargo

fuzz: $(CARGO_FUZZ) ## libFuzzer on every parser of outside input, one target after another, FUZZ_SECONDS each (60; FUZZ_TARGETS to choose), on stable (RUSTC_BOOTSTRAP=1)
	CARGO_FUZZ=$(CARGO_FUZZ) bash scripts/fuzz.sh

CHAOS_FILES ?= chaos_api chaos_controller chaos_pods chaos_network chaos_agents chaos_git chaos_leaders
CHAOS_REPORT ?= target/chaos-report.md
chaos: tools ## Issue 16's fault matrix, full size: each fault 10 times (CHAOS_REPETITIONS), the API server down 30 s (CHAOS_OUTAGE_SECS); rows in CHAOS_REPORT (target/chaos-report.md)
	$(CARGO) build --bin switchback
	@mkdir -p $(dir $(CHAOS_REPORT))
	@printf '| fault | injected | Switchback did | recovery | requests failed | invariants |\n|---|---|---|---|---|---|\n' > $(CHAOS_REPORT)
	CHAOS_REPETITIONS=$${CHAOS_REPETITIONS:-10} CHAOS_OUTAGE_SECS=$${CHAOS_OUTAGE_SECS:-30} CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) \
		$(CARGO) test -p switchback-tests $(addprefix --test ,$(CHAOS_FILES)) -- --nocapture --test-threads=1
	@echo "fault table: $(CHAOS_REPORT)"; cat $(CHAOS_REPORT)

fmt: ## Format the code
	$(CARGO) fmt --all
