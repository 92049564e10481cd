// Command graphsubs is crmsync's Microsoft Graph subscription manager function: on its schedule
// it creates, renews, reauthorizes and recreates the mail and calendar subscriptions and resyncs
// gaps, first recording the lifecycle notifications that reached the notification route (from the
// ledger); on POST /webhooks/msgraph/lifecycle it records Graph's lifecycle notifications. It loads
// its configuration once, builds its clients once (shared/wiring/graphsubs), and starts the
// Lambda runtime loop; it calls no AWS API at init.
package main

import (
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/wiring/graphsubs"
)

func main() { wiring.Main("graphsubs", graphsubs.Build) }
