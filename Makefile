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
FUNCTIONS := $(WEBHOOK_FUNCTIONS) WorkerFunction $(RECONCILE_FUNCTIONS)

$(foreach f,$(WEBHOOK_FUNCTIONS),$(eval PKG_$(f) := ./functions/webhook))
PKG_WorkerFunction := ./functions/worker
$(foreach f,$(RECONCILE_FUNCTIONS),$(eval PKG_$(f) := ./functions/reconcile))

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

check-moto:
	@command -v moto_server >/dev/null || { echo "moto_server is not installed: run pip install 'moto[server]' (Python 3.9+)"; exit 1; }
	@command -v cfn-lint >/dev/null || { echo "cfn-lint is not installed: run pip install cfn-lint"; exit 1; }

# The whole pipeline on this machine, in the foreground until Ctrl-C (same as `crmsync dev`).
dev: deps check-moto
	go build -o $(BIN)/crmsync ./cmd/crmsync
	$(BIN)/crmsync dev

lint: check-moto
	cfn-lint template.yaml
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

# cfn-lint, gofmt, vet, every test (each test binary starts its own moto on a free port unless
# CRMSYNC_TEST_AWS_ENDPOINT names one), fuzz seed corpora, and the aws-lambda-rie smoke run.
test: deps tools lint vet
	go test -count=1 -timeout 20m ./...

# Runs every fuzz target for FUZZTIME each (seed corpora already run in `make test`).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Regenerates events/ (signed with config/dev-secrets.json at the current time).
events:
	go run ./cmd/crmsync events generate
