// Command worker is crmsync's worker Lambda function (the SQS event source's consumer).
// It loads its configuration once, builds its clients once (shared/wiring/worker: only what this
// kind runs), wires the handler and starts the Lambda runtime loop; it calls no AWS API at init.
package main

import (
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/wiring/worker"
)

func main() { wiring.Main("worker", worker.Build) }
