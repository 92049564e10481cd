// Command reconcile is crmsync's reconcile Lambda function (parity, consistency, mapping-review).
// It loads its configuration once, builds its clients once (shared/wiring/reconcile: only what this
// kind runs), wires the handler and starts the Lambda runtime loop; it calls no AWS API at init.
package main

import (
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/wiring/reconcile"
)

func main() { wiring.Main("reconcile", reconcile.Build) }
