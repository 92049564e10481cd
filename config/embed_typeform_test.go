package config_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/connector/typeform"
	"github.com/crmsync/crmsync/shared/policy"
)

// TestEmbeddedTypeformMapping checks the embedded Typeform mapping is the file on disk and valid
// against the embedded policy (every custom field it names is declared there).
func TestEmbeddedTypeformMapping(t *testing.T) {
	disk, err := os.ReadFile("typeform.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, config.TypeformYAML) {
		t.Fatal("embedded mapping differs from config/typeform.yaml")
	}
	p, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := typeform.ParseMapping("config/typeform.yaml", config.TypeformYAML, p); err != nil {
		t.Fatalf("embedded mapping is invalid:\n%v", err)
	}
}
