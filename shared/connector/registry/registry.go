// Package registry owns the registry of crmsync's vendor connectors: the one place that maps a
// source name (as in /webhooks/<name> and the CONNECTOR environment variable) to its connector.
package registry

import (
	"fmt"
	"sort"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/calendly"
	"github.com/crmsync/crmsync/shared/connector/generic"
	"github.com/crmsync/crmsync/shared/connector/mailgun"
	"github.com/crmsync/crmsync/shared/connector/metaleads"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/connector/twilio"
	"github.com/crmsync/crmsync/shared/connector/typeform"
)

var byName = map[string]func() connector.Connector{
	twilio.Name:    func() connector.Connector { return twilio.New() },
	calendly.Name:  func() connector.Connector { return calendly.New() },
	typeform.Name:  func() connector.Connector { return typeform.New() },
	metaleads.Name: func() connector.Connector { return metaleads.New() },
	msgraph.Name:   func() connector.Connector { return msgraph.New() },
	mailgun.Name:   func() connector.Connector { return mailgun.New() },
	generic.Name:   func() connector.Connector { return generic.New() },
}

// New returns the connector for a source name.
func New(name string) (connector.Connector, error) {
	f, ok := byName[name]
	if !ok {
		return nil, fmt.Errorf("unknown connector %q (known: %v)", name, Names())
	}
	return f(), nil
}

// Names lists every connector's source name, sorted.
func Names() []string {
	out := make([]string, 0, len(byName))
	for n := range byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
