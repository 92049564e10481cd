package config_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/reconcile"
)

// TestEmbeddedPolicy checks that the embedded bytes are the file on disk and that they pass
// validation, so a broken policy fails the build's tests rather than the deployed worker.
func TestEmbeddedPolicy(t *testing.T) {
	disk, err := os.ReadFile("policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, config.PolicyYAML) {
		t.Fatal("embedded policy differs from config/policy.yaml")
	}
	p, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatalf("embedded policy is invalid:\n%v", err)
	}
	if p.DeclaredVersion() == "" {
		t.Error("no declared version")
	}
	if _, ok := p.Source(policy.SystemOfRecord); !ok {
		t.Errorf("no %s source", policy.SystemOfRecord)
	}
}

// TestEmbeddedReconcile checks the embedded reconcile settings are the file on disk and valid.
func TestEmbeddedReconcile(t *testing.T) {
	disk, err := os.ReadFile("reconcile.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, config.ReconcileYAML) {
		t.Fatal("embedded reconcile settings differ from config/reconcile.yaml")
	}
	s, err := reconcile.ParseConfig("config/reconcile.yaml", config.ReconcileYAML)
	if err != nil {
		t.Fatalf("embedded reconcile settings are invalid:\n%v", err)
	}
	if s.SLAs[reconcile.JobParity]["drift_percent"] != 0.1 {
		t.Errorf("parity drift SLA = %v, want 0.1 %% (design section 7)", s.SLAs[reconcile.JobParity]["drift_percent"])
	}
}
