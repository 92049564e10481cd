package functions_test

import (
	"os/exec"
	"strings"
	"testing"
)

// module is the repository's module path.
const module = "github.com/crmsync/crmsync"

// product are the packages whose dependencies must stay product: every deployed function and the
// ops tool.
var product = []string{"./functions/webhook", "./functions/worker", "./functions/reconcile", "./functions/crmchanges", "./functions/graphsubs", "./cmd/crmsync"}

// forbidden returns why a dependency may not be linked into a deployed binary or the ops tool,
// or "" when it may: package testing, and any package of the repository outside shared/ and
// config/ (tools/ holds the development and test tooling).
func forbidden(dep string) string {
	switch {
	case dep == "testing" || strings.HasPrefix(dep, "testing/"):
		return "test code"
	case dep == module+"/config" || strings.HasPrefix(dep, module+"/shared/"):
		return ""
	case strings.HasPrefix(dep, module+"/tools/"):
		return "development tooling (tools/)"
	case strings.HasPrefix(dep, module+"/"):
		return "not a product package (only shared/ and config/ are)"
	}
	return ""
}

// TestForbiddenRule checks the rule itself on the cases it must catch and the ones it must let
// through, so the boundary test below cannot pass by accepting everything.
func TestForbiddenRule(t *testing.T) {
	for dep, bad := range map[string]bool{
		"testing":                           true,
		"testing/quick":                     true,
		module + "/tools/localcloud":        true,
		module + "/tools/cmd/crmsync-dev":   true,
		module + "/functions/webhook":       true, // a main linking another main's package
		module + "/shared/worker":           false,
		module + "/shared/connector/twilio": false,
		module + "/config":                  false,
		"github.com/aws/aws-sdk-go-v2/aws":  false,
		"net/http/httptest":                 false, // std, not package testing
	} {
		if got := forbidden(dep) != ""; got != bad {
			t.Errorf("forbidden(%q) = %v, want %v", dep, got, bad)
		}
	}
}

// TestProductLinksNoTooling fails when a deployed function or the ops tool depends on the
// development tooling under tools/ or on package testing, as Lambda builds them (the Makefile's
// tags) and as a plain build does.
func TestProductLinksNoTooling(t *testing.T) {
	for _, tags := range []string{"", "lambda.norpc"} {
		for _, pkg := range product {
			args := []string{"list", "-deps"}
			if tags != "" {
				args = append(args, "-tags", tags)
			}
			out, err := exec.Command("go", append(args, "../"+strings.TrimPrefix(pkg, "./"))...).CombinedOutput()
			if err != nil {
				t.Fatalf("go %s ../%s: %v\n%s", strings.Join(args, " "), strings.TrimPrefix(pkg, "./"), err, out)
			}
			self := module + "/" + strings.TrimPrefix(pkg, "./")
			for _, dep := range strings.Fields(string(out)) {
				if dep == self {
					continue
				}
				if why := forbidden(dep); why != "" {
					t.Errorf("%s (tags %q) depends on %s: %s; deployed functions and the ops tool link only shared/ and config/", pkg, tags, dep, why)
				}
			}
		}
	}
}

// TestDomainPackagesArePure fails when a domain package (policy, decisions, association, timeline,
// identities, the canonical event, item shapes) depends on the AWS SDK or the Lambda runtime: they
// stay pure so they are table-tested without a cloud.
func TestDomainPackagesArePure(t *testing.T) {
	for _, pkg := range []string{"canonical", "identity", "policy", "decide", "association", "timeline", "store"} {
		out, err := exec.Command("go", "list", "-deps", "../shared/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps ../shared/%s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/aws/") || forbidden(dep) != "" {
				t.Errorf("shared/%s depends on %s: domain packages import no AWS SDK, Lambda runtime, tooling or testing", pkg, dep)
			}
		}
	}
}
