// Command webhook is crmsync's webhook Lambda function (one binary for every connector).
// It loads its configuration once, builds its clients once (shared/wiring/webhook: only what this
// kind runs), wires the handler and starts the Lambda runtime loop; it calls no AWS API at init.
package main

import (
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/wiring/webhook"
)

func main() { wiring.Main("webhook", webhook.Build) }
