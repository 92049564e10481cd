# crmsync Makefile. Build rules first; test/dev targets follow below them.

# ---------------------------------------------------------------------------- build
# Lambda binaries: static, arm64 (provided.al2023), no RPC shim, reproducible.
# `make dist HOST=1` (or GOOS=/GOARCH= overrides) builds for this machine instead.
GOOS ?= linux
GOARCH ?= arm64
ifdef HOST
GOOS := $(shell go env GOHOSTOS)
GOARCH := $(shell go env GOHOSTARCH)
endif
GO_BUILD = CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) go build -tags lambda.norpc -trimpath -ldflags="-s -w -buildid="

# Function logical id (template.yaml) -> Go package. The single place that maps them.
WEBHOOK_FUNCTIONS := WebhookTwilioFunction WebhookCalendlyFunction WebhookTypeformFunction \
	WebhookMetaLeadsFunction WebhookMsgraphFunction WebhookMailgunFunction WebhookGenericFunction
RECONCILE_FUNCTIONS := ReconcileParityFunction ReconcileConsistencyFunction ReconcileMappingReviewFunction
FUNCTIONS := $(WEBHOOK_FUNCTIONS) WorkerFunction CrmChangesFunction $(RECONCILE_FUNCTIONS) GraphSubscriptionsFunction

$(foreach f,$(WEBHOOK_FUNCTIONS),$(eval PKG_$(f) := ./functions/webhook))
PKG_WorkerFunction := ./functions/worker
PKG_CrmChangesFunction := ./functions/crmchanges
$(foreach f,$(RECONCILE_FUNCTIONS),$(eval PKG_$(f) := ./functions/reconcile))
PKG_GraphSubscriptionsFunction := ./functions/graphsubs

.PHONY: dist lint-template $(addprefix build-,$(FUNCTIONS)) FORCE

# `sam build` (BuildMethod: makefile) runs `make build-<LogicalId>` with ARTIFACTS_DIR set.
$(addprefix build-,$(FUNCTIONS)): build-%:
	$(if $(ARTIFACTS_DIR),,$(error ARTIFACTS_DIR is not set: sam build sets it; use `make dist` otherwise))
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap $(PKG_$*)

# dist/<LogicalId>/bootstrap for every function: the same binaries CDK and the local emulator use.
dist: $(foreach f,$(FUNCTIONS),dist/$(f)/bootstrap)

dist/%/bootstrap: FORCE
	$(GO_BUILD) -o $@ $(PKG_$*)

FORCE:

lint-template:
	cfn-lint template.yaml

# The CDK app (infra/cdk, a Go module of its own) deploys the same `make dist` binaries: `make synth`
# writes its cloud assembly to infra/cdk/cdk.out without the CDK CLI (`go run .`; jsii runs node).
CDK_OUT := infra/cdk/cdk.out
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: synth test-cdk print-functions
synth: dist
	rm -rf $(CDK_OUT)
	cd infra/cdk && go run .

# Synthesized once; cfn-lint, then the parity and least-privilege tests read that template.
test-cdk: synth
	cfn-lint $(CDK_OUT)/*.template.json
	cd infra/cdk && go vet ./... && \
	  CRMSYNC_CDK_TEMPLATE=$(CURDIR)/$(CDK_OUT)/Crmsync.template.json go test -count=1 ./...

# For infra/cdk's tests: the functions, and the package each bootstrap is built from.
print-functions:
	@echo $(FUNCTIONS)
print-pkg-%:
	@echo $(PKG_$*)

# ---------------------------------------------------------------------------- tools, dev, test
# Everything `make dev` and `make test` need beyond Go, Python's moto_server and cfn-lint (which the
# machine image provides) is installed here from the Go module proxy.
RIE_VERSION := v0.0.0-20261030222936-bef5c4ba774d
BIN := $(CURDIR)/bin
export CRMSYNC_RIE_BIN := $(BIN)/aws-lambda-rie

.PHONY: tools deps dev test lint vet fuzz events check-moto

tools: $(BIN)/aws-lambda-rie

$(BIN)/aws-lambda-rie:
	GOBIN=$(BIN) go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION)

deps:
	go mod download

# The moto release the local stack and the reliability suite's patched moto_server are written
# against (tools/moto.Version and tools/moto/patched.py say the same).
MOTO_VERSION := 5.2.1

check-moto:
	@command -v moto_server >/dev/null || { echo "moto_server is not installed: run pip install 'moto[server]==$(MOTO_VERSION)' (Python 3.9+)"; exit 1; }
	@v=$$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null); [ "$$v" = "$(MOTO_VERSION)" ] || { \
	  echo "moto $$v found; crmsync's local stack and reliability patch are written against moto $(MOTO_VERSION): run pip install 'moto[server]==$(MOTO_VERSION)'"; exit 1; }
	@command -v cfn-lint >/dev/null || { echo "cfn-lint is not installed: run pip install cfn-lint"; exit 1; }

# The whole pipeline on this machine, in the foreground until Ctrl-C (same as `crmsync-dev dev`).
dev: deps check-moto
	go build -o $(BIN)/crmsync-dev ./tools/cmd/crmsync-dev
	$(BIN)/crmsync-dev dev

lint: check-moto
	cfn-lint template.yaml
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

# cfn-lint, gofmt, vet, the CDK app (synth, cfn-lint, parity and least-privilege tests), every test
# (each test binary starts its own moto on a free port unless CRMSYNC_TEST_AWS_ENDPOINT names one),
# fuzz seed corpora, and the aws-lambda-rie smoke run.
test: deps tools lint vet test-cdk
	go test -count=1 -timeout 45m ./...

# Runs every fuzz target for FUZZTIME each (seed corpora already run in `make test`).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# The reliability suite in full (docs/reliability.md): 10,000 events with duplicates, reordering,
# AWS faults, contention, index lag, poison messages and worker crashes, judged by an independent
# oracle; rewrites the full run's table in docs/reliability.md (about 25 minutes on 2 cores).
# SEEDS=n runs the shortened run's profile (TestReliabilityShort's) with seeds 1..n instead and
# rewrites the seeds table (about 3 minutes a seed). RELIABILITY_FLAGS adds flags (e.g. --seed 2).
SEEDS ?=
.PHONY: reliability
reliability: deps check-moto
	@if [ -n "$(SEEDS)" ]; then \
	  set -x; go run ./tools/cmd/crmsync-dev reliability --short --seeds $(SEEDS) --seed 1 --doc docs/reliability.md $(RELIABILITY_FLAGS); \
	else \
	  set -x; go run ./tools/cmd/crmsync-dev reliability --doc docs/reliability.md $(RELIABILITY_FLAGS); \
	fi

# Regenerates events/ (signed with config/dev-secrets.json at the current time).
events:
	go run ./tools/cmd/crmsync-dev events generate

# ---------------------------------------------------------------------------- bench
# Benchmarks and the cost model: the Go benchmarks, the deployed (arm64) bootstraps, then
# `crmsync-dev bench` on the local stack (moto). Rewrites docs/benchmarks.md; about 5 minutes on 2 cores.
BENCH_TMP := .tmp/bench
.PHONY: bench
bench: deps tools check-moto
	@mkdir -p $(BENCH_TMP)
	go test -run '^$$' -bench . -benchmem ./shared/ingest ./shared/decide ./shared/association > $(BENCH_TMP)/go-bench.txt || { cat $(BENCH_TMP)/go-bench.txt; exit 1; }
	go test -run '^$$' -bench . -benchmem -benchtime 2000x ./shared/worker >> $(BENCH_TMP)/go-bench.txt || { cat $(BENCH_TMP)/go-bench.txt; exit 1; }
	@cat $(BENCH_TMP)/go-bench.txt
	$(MAKE) dist
	go run ./tools/cmd/crmsync-dev bench --go-bench $(BENCH_TMP)/go-bench.txt --dist dist --rie $(BIN)/aws-lambda-rie \
		--log $(BENCH_TMP)/stack.log --out docs/benchmarks.md
