package main

// The system this app declares, as plain data: the connectors, the functions and the alarms. It is
// written out here on purpose rather than read from template.yaml, so that the parity test
// (parity_test.go) compares two independent descriptions of one system.

// connector is one webhook source: one function, one secret, one or more routes.
type connector struct {
	Source       string   // URL segment and CONNECTOR value, e.g. "meta-leads"
	Name         string   // logical-id stem, e.g. "MetaLeads" (WebhookMetaLeadsFunction, MetaLeadsSecret)
	SecretFields string   // the secret JSON shape and what each field is for (the secret's description)
	Methods      []string // HTTP methods on /webhooks/<source>
	ReplayTable  bool     // needs the replay-protection table (Mailgun tokens)
}

func (c connector) FunctionID() string { return "Webhook" + c.Name + "Function" }
func (c connector) SecretID() string   { return c.Name + "Secret" }
func (c connector) OutputID() string   { return c.Name + "WebhookUrl" }

var connectors = []connector{
	{
		Source:       "twilio",
		Name:         "Twilio",
		SecretFields: `{"current":{"auth_token":"...","account_sid":"..."},"previous":{"auth_token":"..."}}. auth_token verifies X-Twilio-Signature; account_sid and auth_token let reconcile list calls.`,
		Methods:      []string{"POST"},
	},
	{
		Source:       "calendly",
		Name:         "Calendly",
		SecretFields: `{"current":{"signing_key":"...","api_token":"..."},"previous":{"signing_key":"..."}}. signing_key verifies Calendly-Webhook-Signature; api_token (personal access token) lets reconcile list scheduled events.`,
		Methods:      []string{"POST"},
	},
	{
		Source:       "typeform",
		Name:         "Typeform",
		SecretFields: `{"current":{"signing_key":"...","api_token":"..."},"previous":{"signing_key":"..."}}. signing_key (the webhook secret) verifies Typeform-Signature; api_token lets reconcile list responses.`,
		Methods:      []string{"POST"},
	},
	{
		Source:       "meta-leads",
		Name:         "MetaLeads",
		SecretFields: `{"current":{"app_secret":"...","verify_token":"...","access_token":"..."},"previous":{"app_secret":"..."}}. app_secret verifies X-Hub-Signature-256; verify_token answers the hub.challenge handshake; access_token (page token) lets the worker hydrate leads.`,
		Methods:      []string{"POST", "GET"}, // GET answers the subscription handshake
	},
	{
		Source:       "msgraph",
		Name:         "Msgraph",
		SecretFields: `{"current":{"client_state":"...","tenant_id":"...","client_id":"...","client_secret":"..."},"previous":{"client_state":"..."}}. client_state authenticates change notifications; tenant_id, client_id and client_secret (app registration) let the worker hydrate messages and events.`,
		Methods:      []string{"POST"},
	},
	{
		Source:       "mailgun",
		Name:         "Mailgun",
		SecretFields: `{"current":{"signing_key":"..."},"previous":{"signing_key":"..."}}. signing_key (HTTP webhook signing key) verifies the signature block.`,
		Methods:      []string{"POST"},
		ReplayTable:  true,
	},
	{
		Source:       "generic",
		Name:         "Generic",
		SecretFields: `{"current":{"signing_key":"whsec_..."},"previous":{"signing_key":"whsec_..."}}. signing_key is the Standard Webhooks secret that verifies webhook-signature.`,
		Methods:      []string{"POST"},
	},
}

// reconcileJob is one scheduled reconciliation function. Its permissions are its own (stack.go,
// reconcilePolicy): each job may do what it does, nothing more.
type reconcileJob struct {
	ID          string // function logical id
	Job         string // JOB and the schedule's {"job": ...} input
	Description string
	Schedule    string // EventBridge schedule expression
	VendorAPIs  bool   // lists vendor items (Twilio, Calendly, Typeform): their secrets and API base URLs
}

var reconcileJobs = []reconcileJob{
	{"ReconcileParityFunction", "parity", "crmsync reconcile - daily critical-entity parity", "cron(15 3 * * ? *)", true},
	{"ReconcileConsistencyFunction", "consistency", "crmsync reconcile - weekly activity/attribution consistency", "cron(30 4 ? * SUN *)", false},
	{"ReconcileMappingReviewFunction", "mapping-review", "crmsync reconcile - monthly mapping review", "cron(45 5 1 * ? *)", false},
}

// listableConnectors: the connectors whose vendor API reconcile lists (secret Name, env prefix, API).
var listableConnectors = []struct{ Name, EnvPrefix, APIBaseURL string }{
	{"Twilio", "TWILIO", "https://api.twilio.com"},
	{"Calendly", "CALENDLY", "https://api.calendly.com"},
	{"Typeform", "TYPEFORM", "https://api.typeform.com"},
	{"Mailgun", "MAILGUN", "https://api.mailgun.net"},
}

// Function defaults (template.yaml's Globals.Function).
const (
	defaultMemoryMB   = 256
	defaultTimeoutSec = 10
)

// FunctionIDs lists every function in the order `make dist` builds them: the ids are the
// dist/<LogicalId>/bootstrap directories the app deploys.
func FunctionIDs() []string {
	var ids []string
	for _, c := range connectors {
		ids = append(ids, c.FunctionID())
	}
	ids = append(ids, "WorkerFunction", "CrmChangesFunction")
	for _, j := range reconcileJobs {
		ids = append(ids, j.ID)
	}
	return append(ids, "GraphSubscriptionsFunction")
}
