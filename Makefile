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
