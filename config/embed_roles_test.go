package config_test

import (
	"os"
	"testing"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/crmchange"
)

// The shipped roles file and the local stack's both validate; the shipped one grants nothing
// until the deployer maps principals, and the local one lets the ops tool's "test" key act as an
// override role.
func TestRolesFilesValidate(t *testing.T) {
	shipped, err := crmchange.ParsePrincipals("config/crm-roles.yaml", config.CrmRolesYAML)
	if err != nil {
		t.Fatal(err)
	}
	if got := shipped.RolesOf("arn:aws:iam::123456789012:user/test"); len(got) != 0 {
		t.Errorf("the shipped roles file grants %v to the local stack's principal", got)
	}
	data, err := os.ReadFile("dev-crm-roles.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := crmchange.ParsePrincipals("config/dev-crm-roles.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := dev.RolesOf("arn:aws:iam::123456789012:user/test"); len(got) == 0 {
		t.Error("the local roles file grants the ops tool's principal nothing")
	}
}
