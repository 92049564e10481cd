// Command crmchanges is crmsync's CRM changes Lambda function (POST /crm/changes).
// It loads its configuration once, builds its clients once (shared/wiring/crmchanges: only what this
// kind runs), wires the handler and starts the Lambda runtime loop; it calls no AWS API at init.
package main

import (
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/wiring/crmchanges"
)

func main() { wiring.Main("crmchanges", crmchanges.Build) }
