package main

// `crmsync connect <source>`: what an operator needs to connect a vendor — the URL to paste in
// the vendor's console, the console steps and the secret's fields (names and meaning, never
// values). The steps and fields are data here; each docs/connectors/<source>.md carries the same
// data rendered as its "Connect it" section (TestConnectDocs holds them equal; -update rewrites
// the sections).

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/connector/calendly"
	"github.com/crmsync/crmsync/shared/connector/generic"
	"github.com/crmsync/crmsync/shared/connector/mailgun"
	"github.com/crmsync/crmsync/shared/connector/metaleads"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/connector/twilio"
	"github.com/crmsync/crmsync/shared/connector/typeform"
)

// secretField is one field of a connector's secret JSON (under "current" and "previous").
type secretField struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
	What     string `json:"what"`
}

// connectGuide is how one vendor is connected.
type connectGuide struct {
	Vendor string        // the vendor's console, as named in the steps
	Scheme string        // how deliveries are signed (what `verify` explains)
	Steps  []string      // console steps; "<url>" stands for the webhook URL
	Fields []secretField // the secret's fields
	// OneOf lists alternative groups of fields of which at least one group must be complete.
	OneOf [][]string
}

// guides maps each connector to its guide (held to registry.Names() by a test).
var guides = map[string]connectGuide{
	"twilio": {
		Vendor: "Twilio Console",
		Scheme: "X-Twilio-Signature: base64(HMAC-SHA1(auth_token, URL + sorted form parameters)); the URL must be exactly the one Twilio calls",
		Steps: []string{
			"Open the phone number (or TwiML app) in the Twilio Console: Phone Numbers → Manage → Active numbers → the number → Voice Configuration.",
			"Set **Call status changes** (Status Callback URL) to `<url>`, method `HTTP POST`.",
			"Choose the status events to send (initiated, ringing, answered, completed) and save.",
			"Copy the **Auth Token** (Account → API keys & tokens) and the Account SID into the secret.",
		},
		Fields: []secretField{
			{twilio.SecretAuthToken, true, "the account's auth token: verifies X-Twilio-Signature"},
			{twilio.SecretAccountSID, false, "the account SID: only for the calls list API (reconciliation, backfill)"},
		},
	},
	"calendly": {
		Vendor: "Calendly API",
		Scheme: "Calendly-Webhook-Signature: t=<unix time>,v1=hex(HMAC-SHA256(signing_key, t + \".\" + body)); t within 3 minutes",
		Steps: []string{
			"Create a personal access token at Calendly → Integrations & apps → API & webhooks.",
			"Choose a signing key (a long random string) and put it in the secret as `signing_key`.",
			"Create the subscription: `POST https://api.calendly.com/webhook_subscriptions` with `url` `<url>`, `events` `[\"invitee.created\", \"invitee.canceled\"]`, your `organization` (and `user` for user scope), `scope` and `signing_key`.",
			"Add `invitee_no_show.created` and `invitee_no_show.deleted` to `events` to see no-shows; other subscribable events are acknowledged and ignored.",
		},
		Fields: []secretField{
			{calendly.SecretSigningKey, true, "the signing key given to the subscription: verifies Calendly-Webhook-Signature"},
			{calendly.SecretAPIToken, false, "personal access token: only for the scheduled-events list API (reconciliation, backfill)"},
			{calendly.SecretOrganization, false, "organization URI whose events are listed (default: the token owner's)"},
		},
	},
	"typeform": {
		Vendor: "Typeform",
		Scheme: "Typeform-Signature: sha256=base64(HMAC-SHA256(signing_key, body))",
		Steps: []string{
			"Open the form in Typeform → Connect → Webhooks → Add a webhook.",
			"Paste `<url>` as the endpoint, turn the webhook on and enter a **Secret** (the secret's `signing_key`).",
			"Give each question to map a question reference (question settings → Question reference) as listed in this page's mapping table.",
			"Use **View deliveries** → Send test request to check the connection.",
		},
		Fields: []secretField{
			{typeform.SecretSigningKey, true, "the webhook's secret: verifies Typeform-Signature"},
			{typeform.SecretAPIToken, false, "personal token: only for the responses list API (reconciliation, backfill)"},
			{typeform.SecretFormIDs, false, "comma-separated form ids to list (default: every form of GET /forms)"},
		},
	},
	"meta-leads": {
		Vendor: "Meta for Developers",
		Scheme: "X-Hub-Signature-256: sha256=hex(HMAC-SHA256(app_secret, body)); GET hub.challenge handshakes use verify_token",
		Steps: []string{
			"In developers.facebook.com, open your Business app → Webhooks → Page → Subscribe to this object.",
			"Set the Callback URL to `<url>` and the Verify token to the secret's `verify_token` (put the secret in place first: Meta calls the URL at once).",
			"Subscribe to the `leadgen` field, then subscribe the app to each Page: `POST /{page-id}/subscribed_apps?subscribed_fields=leadgen`.",
			"Copy App settings → Basic → App secret into `app_secret`, and a long-lived Page (or System User) token with `leads_retrieval` into `access_token`.",
			"Send a test lead with the Lead Ads Testing Tool.",
		},
		Fields: []secretField{
			{metaleads.SecretAppSecret, true, "the Meta app secret: verifies X-Hub-Signature-256"},
			{metaleads.SecretVerifyToken, true, "the token you give Meta for the subscription handshake (hub.verify_token)"},
			{metaleads.SecretAccessToken, true, "Page or System User access token: reads each lead (hydration)"},
			{metaleads.SecretAdFields, false, "\"true\" to also read ad and campaign fields (needs ads_management)"},
		},
	},
	"msgraph": {
		Vendor: "Microsoft Entra admin center and Microsoft Graph",
		Scheme: "no signature: each notification's clientState must equal client_state; ?validationToken= handshakes are echoed",
		Steps: []string{
			"Register an app in the Entra admin center (App registrations → New registration); note its client and tenant ids.",
			"Add a client secret (Certificates & secrets) and the application permissions Mail.Read, Calendars.Read and User.Read.All; grant admin consent.",
			"Put the secret in place, with a random `client_state` of your choice.",
			"List the mailboxes in the stack's GraphMailboxes parameter: the subscription manager creates and renews their subscriptions (`crmsync graph subscriptions ensure`). To create one by hand: `POST https://graph.microsoft.com/v1.0/subscriptions` (header `Prefer: IdType=\"ImmutableId\"`) with `notificationUrl` `<url>`, `lifecycleNotificationUrl` `<url>/lifecycle`, the resource (`users/{id}/messages`, `users/{id}/events`) and `clientState` = the secret's `client_state`.",
		},
		Fields: []secretField{
			{msgraph.SecretClientState, true, "the subscriptions' clientState: authenticates each notification"},
			{msgraph.SecretTenantID, false, "the app registration's tenant id (client credentials)"},
			{msgraph.SecretClientID, false, "the app registration's client id (client credentials)"},
			{msgraph.SecretClientSecret, false, "the app registration's client secret (client credentials)"},
			{msgraph.SecretTokenURL, false, "overrides the token endpoint (national clouds, tests)"},
			{msgraph.SecretAccessToken, false, "a static bearer token, used only without client credentials"},
		},
		OneOf: [][]string{{msgraph.SecretClientID, msgraph.SecretClientSecret}, {msgraph.SecretAccessToken}},
	},
	"mailgun": {
		Vendor: "Mailgun control panel",
		Scheme: "body signature {timestamp, token, signature}: hex(HMAC-SHA256(signing_key, timestamp + token)); timestamp within 5 minutes, each token once",
		Steps: []string{
			"In the Mailgun control panel open Send → Sending → Webhooks and pick the domain.",
			"Add `<url>` for each event to sync (delivered, opened, clicked, permanent_fail, temporary_fail, complained, unsubscribed, accepted).",
			"Copy the **HTTP webhook signing key** (Settings → API Security) into the secret's `signing_key`.",
			"Use **Test webhook** to check the connection.",
		},
		Fields: []secretField{
			{mailgun.SecretSigningKey, true, "the HTTP webhook signing key: verifies the body's signature object"},
			{mailgun.SecretParentSigningKey, false, "the primary account's signing key: verifies a subaccount delivery's parent-signature"},
			{mailgun.SecretAPIKey, false, "a private API key: the Events API lister (parity, backfill) signs in as api:<key>"},
			{mailgun.SecretDomain, false, "the sending domain whose events the lister reads"},
		},
	},
	"generic": {
		Vendor: "the sending system (any Standard Webhooks sender)",
		Scheme: "Standard Webhooks: webhook-signature v1,base64(HMAC-SHA256(key, webhook-id.webhook-timestamp.body)); timestamp within 5 minutes",
		Steps: []string{
			"In the sender, add an endpoint with URL `<url>`, method POST, content type `application/json`.",
			"Generate a Standard Webhooks secret (`whsec_` + base64 key) and give it to both the sender and the secret's `signing_key`.",
			"Send bodies of the crmsync.generic/v1 schema (docs/connectors/generic.schema.json), with a stable `webhook-id` per message.",
		},
		Fields: []secretField{
			{generic.SecretField, true, "the Standard Webhooks secret (whsec_<base64 key>): verifies webhook-signature"},
		},
	},
}

// outputKey is the stack output with a connector's webhook URL, e.g. TwilioWebhookUrl.
func outputKey(source string) string {
	return strings.TrimSuffix(secretLogicalID(source), "Secret") + "WebhookUrl"
}

// guideFor returns the source's guide, or an error listing the known sources.
func guideFor(source string) (connectGuide, error) {
	g, ok := guides[source]
	if !ok {
		return g, fmt.Errorf("unknown source %q (one of %s)", source, strings.Join(registry.Names(), ", "))
	}
	return g, nil
}

// connectDoc is the --json document of `connect`.
type connectDoc struct {
	Schema     string        `json:"schema"`
	Source     string        `json:"source"`
	Stack      string        `json:"stack,omitempty"`
	Local      bool          `json:"local"`
	URL        string        `json:"url"`
	URLOutput  string        `json:"url_output"`
	Vendor     string        `json:"vendor"`
	Steps      []string      `json:"steps"`
	SecretName string        `json:"secret_name"`
	SecretID   string        `json:"secret_id,omitempty"`
	Fields     []secretField `json:"fields"`
	OneOf      [][]string    `json:"one_of,omitempty"`
	Signature  string        `json:"signature"`
}

const connectSchema = "crmsync.connect/v1"

func newConnectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "connect <source>",
		Short: "How to connect a vendor: the webhook URL to paste, the console steps and the secret's fields",
		Long: `Connect prints what connecting a vendor takes: the URL to paste in the vendor's console (the
stack output <Source>WebhookUrl, or the local stack's http://127.0.0.1:3000/webhooks/<source>), the
console steps, and the fields of the secret crmsync/<stage>/<source> (names and what each is; never
values). Install the secret with ` + "`crmsync secrets rotate <source> --from-file new.json`" + `.
The same steps are in docs/connectors/<source>.md under "Connect it".`,
		Example:   "  crmsync connect twilio\n  crmsync connect typeform --json",
		Args:      cobra.ExactArgs(1),
		ValidArgs: registry.Names(),
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := guideFor(args[0])
			if err != nil {
				return err
			}
			doc := connectDoc{Schema: connectSchema, Source: args[0], URLOutput: outputKey(args[0]), Vendor: g.Vendor,
				Fields: g.Fields, OneOf: g.OneOf, Signature: g.Scheme, SecretName: "crmsync/<stage>/" + args[0],
				URL: "https://<api>/webhooks/" + args[0]}
			ref, err := resolveStack(cmd)
			if err != nil {
				// The steps and fields hold without a stack; say why the URL is a placeholder.
				fmt.Fprintf(cmd.ErrOrStderr(), "crmsync: %v; the URL below is a placeholder\n", err)
			} else {
				doc.Stack, doc.Local = ref.Name, ref.Local
				switch {
				case ref.Outputs[doc.URLOutput] != "" && !ref.Local:
					doc.URL = ref.Outputs[doc.URLOutput]
				case ref.APIBase != "":
					doc.URL = ref.APIBase + "/webhooks/" + args[0]
				}
				if sec, ok := ref.Resources[secretLogicalID(args[0])]; ok {
					doc.SecretID = sec.Ref
				}
			}
			for _, s := range g.Steps {
				doc.Steps = append(doc.Steps, strings.ReplaceAll(s, "<url>", doc.URL))
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), doc)
			}
			printConnect(cmd.OutOrStdout(), doc)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {schema: "`+connectSchema+`", source, stack, local, url, url_output, vendor, steps, secret_name, secret_id, fields: [{name, required, what}], one_of, signature}`)
	return cmd
}

func printConnect(w io.Writer, d connectDoc) {
	where := "no stack"
	if d.Stack != "" {
		where = "stack " + d.Stack
		if d.Local {
			where += " (local)"
		}
	}
	fmt.Fprintf(w, "Connect %s (%s)\n\n", d.Source, where)
	fmt.Fprintf(w, "URL to paste in %s:\n  %s\n", d.Vendor, d.URL)
	if !d.Local {
		fmt.Fprintf(w, "  (the stack output %s)\n", d.URLOutput)
	}
	fmt.Fprintf(w, "\nSteps:\n")
	for i, s := range d.Steps {
		fmt.Fprintf(w, "  %d. %s\n", i+1, strings.ReplaceAll(s, "**", ""))
	}
	id := d.SecretName
	if d.SecretID != "" && d.SecretID != d.SecretName {
		id += " (" + d.SecretID + ")"
	}
	fmt.Fprintf(w, "\nSecret %s, JSON {\"current\": {...}, \"previous\": {...}}; fields:\n", id)
	for _, f := range d.Fields {
		req := "optional"
		if f.Required {
			req = "required"
		}
		fmt.Fprintf(w, "  %-14s %-9s %s\n", f.Name, req, f.What)
	}
	if len(d.OneOf) > 0 {
		var alts []string
		for _, g := range d.OneOf {
			alts = append(alts, strings.Join(g, " + "))
		}
		fmt.Fprintf(w, "  and one of: %s\n", strings.Join(alts, ", or "))
	}
	fmt.Fprintf(w, "\nSignature: %s\n", d.Signature)
	fmt.Fprintf(w, "Install or rotate it: crmsync secrets rotate %s --from-file new.json\n", d.Source)
}

// connectSection renders a guide as the "Connect it" section of docs/connectors/<source>.md.
func connectSection(source string, g connectGuide) string {
	var b strings.Builder
	b.WriteString("## Connect it\n\n")
	b.WriteString("<!-- Generated from cmd/crmsync/connect.go (`crmsync connect " + source + "` prints the same);\n")
	b.WriteString("     edit there, then: go test ./cmd/crmsync -run TestConnectDocs -update -->\n\n")
	fmt.Fprintf(&b, "Webhook URL: the stack output `%s` (`crmsync connect %s` prints it; locally\n", outputKey(source), source)
	fmt.Fprintf(&b, "`http://127.0.0.1:3000/webhooks/%s`). In %s:\n\n", source, g.Vendor)
	for i, s := range g.Steps {
		fmt.Fprintf(&b, "%d. %s\n", i+1, strings.ReplaceAll(s, "<url>", "https://<api>/webhooks/"+source))
	}
	fmt.Fprintf(&b, "\nSecret `crmsync/<stage>/%s`, JSON `{\"current\": {...}, \"previous\": {...}}`:\n\n", source)
	b.WriteString("| field | required | what it is |\n|---|---|---|\n")
	for _, f := range g.Fields {
		req := "no"
		if f.Required {
			req = "yes"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Name, req, f.What)
	}
	if len(g.OneOf) > 0 {
		var alts []string
		for _, grp := range g.OneOf {
			var names []string
			for _, n := range grp {
				names = append(names, "`"+n+"`")
			}
			alts = append(alts, strings.Join(names, " + "))
		}
		fmt.Fprintf(&b, "\nAlso one of: %s.\n", strings.Join(alts, ", or "))
	}
	fmt.Fprintf(&b, "\nSignature: %s.\n\n", g.Scheme)
	fmt.Fprintf(&b, "Install it with `crmsync secrets rotate %s --from-file new.json` (new.json holds the\n", source)
	b.WriteString("fields above); once the vendor uses the new value, `--finish` drops the previous one.\n")
	return b.String()
}

// missingFields returns the guide's required fields (and unmet one-of groups) absent from v.
func missingFields(g connectGuide, v map[string]string) []string {
	var missing []string
	for _, f := range g.Fields {
		if f.Required && strings.TrimSpace(v[f.Name]) == "" {
			missing = append(missing, f.Name)
		}
	}
	if len(g.OneOf) > 0 && !slices.ContainsFunc(g.OneOf, func(grp []string) bool {
		return !slices.ContainsFunc(grp, func(n string) bool { return strings.TrimSpace(v[n]) == "" })
	}) {
		var alts []string
		for _, grp := range g.OneOf {
			alts = append(alts, strings.Join(grp, "+"))
		}
		missing = append(missing, "one of "+strings.Join(alts, " or "))
	}
	return missing
}
