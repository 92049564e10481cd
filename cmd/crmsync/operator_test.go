package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/samples"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

var update = flag.Bool("update", false, "rewrite the golden files: docs/cli.md and the Connect it sections of docs/connectors/*.md")

// The "Connect it" section of every connector page is the command's own data rendered: the docs
// and `crmsync connect` cannot drift. -update rewrites the sections.
func TestConnectDocs(t *testing.T) {
	for _, name := range registry.Names() {
		g, ok := guides[name]
		if !ok {
			t.Errorf("%s: no connect guide", name)
			continue
		}
		path := filepath.Join("../../docs/connectors", name+".md")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(b)
		want := connectSection(name, g)
		start := strings.Index(doc, "## Connect it\n")
		got := ""
		end := len(doc)
		if start >= 0 {
			if i := strings.Index(doc[start+3:], "\n## "); i >= 0 {
				end = start + 3 + i + 1
			}
			got = doc[start:end]
		}
		if strings.TrimSpace(got) == strings.TrimSpace(want) {
			continue
		}
		if !*update {
			t.Errorf("%s: the Connect it section differs from `crmsync connect %s` (regenerate: go test ./cmd/crmsync -run TestConnectDocs -update)\n--- doc\n%s\n--- command\n%s", path, name, got, want)
			continue
		}
		if start < 0 {
			// Place it right after the page's introduction, before its first section.
			start = strings.Index(doc, "\n## ") + 1
			end = start
			want += "\n"
		} else if end < len(doc) {
			want += "\n"
		}
		if err := os.WriteFile(path, []byte(doc[:start]+want+doc[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name := range guides {
		if _, err := registry.New(name); err != nil {
			t.Errorf("guide for %s, which is no connector", name)
		}
	}
}

func TestMissingFieldsNamesThem(t *testing.T) {
	if got := missingFields(guides["meta-leads"], map[string]string{"app_secret": "x"}); strings.Join(got, ",") != "verify_token,access_token" {
		t.Errorf("meta-leads missing = %v", got)
	}
	if got := missingFields(guides["msgraph"], map[string]string{"client_state": "x"}); len(got) != 1 || !strings.HasPrefix(got[0], "one of") {
		t.Errorf("msgraph without credentials: missing = %v", got)
	}
	if got := missingFields(guides["msgraph"], map[string]string{"client_state": "x", "access_token": "y"}); len(got) != 0 {
		t.Errorf("msgraph with a token: missing = %v", got)
	}
}

func TestConnectLocal(t *testing.T) {
	s := startStack(t, false)
	var doc connectDoc
	if err := json.Unmarshal([]byte(s.mustCLI("connect", "meta-leads", "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.URL != s.publicBase()+"/webhooks/meta-leads" || !doc.Local || doc.URLOutput != "MetaLeadsWebhookUrl" {
		t.Errorf("connect meta-leads: url %q local %v output %q", doc.URL, doc.Local, doc.URLOutput)
	}
	if len(doc.Steps) == 0 || !strings.Contains(strings.Join(doc.Steps, "\n"), doc.URL) {
		t.Errorf("steps do not name the URL: %v", doc.Steps)
	}
	var names []string
	for _, f := range doc.Fields {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "app_secret,verify_token,access_token,ad_fields" {
		t.Errorf("fields %v", names)
	}
	text := s.mustCLI("connect", "meta-leads")
	for name, v := range s.secrets["meta-leads"].Current {
		if name == "ad_fields" {
			continue // a switch ("true"), not a secret; the docs name its value
		}
		if strings.Contains(text, v) {
			t.Errorf("connect printed a secret value")
		}
	}
}

// ttlFactory builds the functions with a 1 s secret cache, so a rotation is seen at once.
func ttlFactory(ctx context.Context, fn samtemplate.Function, env localcloud.FunctionEnv) (lambda.Handler, error) {
	get := env.Getenv
	env.Getenv = func(k string) string {
		if k == "SECRET_TTL_SECONDS" {
			return "1"
		}
		return get(k)
	}
	return fnbuild.Factory(ctx, fn, env)
}

// A rotation keeps both values verifying until --finish; then only the new one does.
func TestSecretsRotateOverlapThenFinish(t *testing.T) {
	s := startStackWith(t, false, ttlFactory)
	const name = "typeform"
	body, err := os.ReadFile("../../events/payloads/" + samplesFile(name))
	if err != nil {
		t.Fatal(err)
	}
	send := func(sec connector.Secret) int {
		ev, err := samplesEvent(name, body, s.publicBase(), sec)
		if err != nil {
			t.Fatal(err)
		}
		status, _ := s.post(ev)
		s.drain()
		return status
	}
	dir := t.TempDir()
	write := func(file string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The dev secret is mid-rotation (it has a previous value): a new rotation is refused.
	newValue := map[string]string{"signing_key": "rotated-typeform-signing-key-0001", "api_token": "rotated-api-token-0001"}
	if _, err := s.cli("secrets", "rotate", name, "--from-file", write("new.json", newValue)); err == nil || !strings.Contains(err.Error(), "--finish") {
		t.Fatalf("rotation while one is under way: %v, want a refusal naming --finish", err)
	}
	s.mustCLI("secrets", "rotate", name, "--finish")
	old := connector.Secret{Current: s.secrets[name].Current}

	// A file without the required field is refused, naming the field and no value.
	_, err = s.cli("secrets", "rotate", name, "--from-file", write("bad.json", map[string]string{"api_token": "tok-not-to-print"}))
	if err == nil || !strings.Contains(err.Error(), "signing_key") || strings.Contains(err.Error(), "tok-not-to-print") {
		t.Fatalf("new.json without signing_key: %v", err)
	}

	out := s.mustCLI("secrets", "rotate", name, "--from-file", write("new.json", newValue))
	for _, v := range append(mapValues(newValue), mapValues(old.Current)...) {
		if strings.Contains(out, v) {
			t.Errorf("rotate printed a secret value: %s", out)
		}
	}
	time.Sleep(1500 * time.Millisecond) // past the webhooks' 1 s secret cache
	next := connector.Secret{Current: newValue}
	if st := send(old); st/100 != 2 {
		t.Errorf("during the overlap, signed with the old secret: %d, want 2xx", st)
	}
	if st := send(next); st/100 != 2 {
		t.Errorf("during the overlap, signed with the new secret: %d, want 2xx", st)
	}
	s.mustCLI("secrets", "rotate", name, "--finish")
	time.Sleep(1500 * time.Millisecond)
	if st := send(old); st != 401 {
		t.Errorf("after --finish, signed with the old secret: %d, want 401", st)
	}
	if st := send(next); st/100 != 2 {
		t.Errorf("after --finish, signed with the new secret: %d, want 2xx", st)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// A delivery with a bad signature: `verify --last` says it failed, which check, the URL it was
// verified against, when, and the scheme; never the signature. A good one afterwards verifies.
func TestVerifyLastRefusedDelivery(t *testing.T) {
	s := startStack(t, false)
	const name = "typeform"
	out, err := s.cli("verify", name, "--last")
	if err != nil || !strings.Contains(out, "no delivery recorded") {
		t.Fatalf("before any delivery: %v\n%s", err, out)
	}
	body, err := os.ReadFile("../../events/payloads/" + samplesFile(name))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := samplesEvent(name, body, s.publicBase(), connector.Secret{Current: map[string]string{"signing_key": "not-the-right-key"}})
	if err != nil {
		t.Fatal(err)
	}
	if status, resp := s.post(ev); status != 401 {
		t.Fatalf("bad signature: %d %s, want 401", status, resp)
	}
	out, err = s.cli("verify", name, "--last")
	if !errors.Is(err, errNotVerified) {
		t.Errorf("verify of a refused delivery: err %v, want errNotVerified", err)
	}
	for _, want := range []string{"FAILED verification", "Typeform-Signature does not match", s.publicBase() + "/webhooks/typeform", "received at:", "HMAC-SHA256", "hint:"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	if sig := ev.Headers["typeform-signature"]; sig == "" || strings.Contains(out, sig) || strings.Contains(s.logs.String(), sig) {
		t.Errorf("the signature appears in the output or the logs")
	}
	var rep verifyReport
	jsonOut, _ := s.cli("verify", name, "--last", "--json")
	if err := json.Unmarshal([]byte(jsonOut), &rep); err != nil || rep.Verified == nil || *rep.Verified || rep.PublicURL == "" || rep.ReceivedAt == "" {
		t.Errorf("verify --json = %s (%v)", jsonOut, err)
	}
	if status, resp := s.post(s.sample(name)); status/100 != 2 {
		t.Fatalf("good delivery: %d %s", status, resp)
	}
	if out, err := s.cli("verify", name, "--last"); err != nil || !strings.Contains(out, "verified") {
		t.Errorf("after a good delivery: %v\n%s", err, out)
	}
}

// asNewcomer clears every way of naming a stack or configuring AWS, as on a fresh machine
// beside `make dev`, and points the default local address at addr.
func asNewcomer(t *testing.T, addr string) {
	t.Helper()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		stackEnv, awsclient.EndpointEnv, "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(k, "")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "none", "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "none", "credentials"))
	t.Setenv("CRMSYNC_HTTP_ADDR", addr)
}

func TestAWSCredentialsConfigured(t *testing.T) {
	home := t.TempDir()
	env := map[string]string{"AWS_CONFIG_FILE": filepath.Join(home, "c"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(home, "k")}
	get := func(k string) string { return env[k] }
	t.Setenv("HOME", home)
	if awsCredentialsConfigured(get) {
		t.Error("nothing configured: reported configured")
	}
	env["AWS_PROFILE"] = "ops"
	if !awsCredentialsConfigured(get) {
		t.Error("AWS_PROFILE set: reported unconfigured")
	}
	delete(env, "AWS_PROFILE")
	if err := os.WriteFile(env["AWS_SHARED_CREDENTIALS_FILE"], []byte("[default]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !awsCredentialsConfigured(get) {
		t.Error("credentials file present: reported unconfigured")
	}
}

// With no stack named and no AWS credentials, commands use the local stack at the default
// address; with none there, one line says what to run, never a credential-chain error.
func TestNoFlagsFindsTheLocalStack(t *testing.T) {
	s := startStack(t, false)
	asNewcomer(t, s.Addr)
	out, _, err := runCLI(t, "status", "--json")
	if err != nil {
		t.Fatalf("status without flags beside a local stack: %v", err)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Local || st.Stack != s.Stack.Name {
		t.Errorf("status = %s (%v), want the local stack %s", out, err, s.Stack.Name)
	}
	t.Setenv("CRMSYNC_HTTP_ADDR", "127.0.0.1:1")
	start := time.Now()
	_, _, err = runCLI(t, "contact", "get", "--email", "ada@example.com")
	if err == nil || err.Error() != errNoStack.Error() || strings.Contains(err.Error(), "\n") {
		t.Errorf("no stack anywhere: %v, want %q", err, errNoStack)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %s to say no stack was found", time.Since(start))
	}
}

// cmdWalk calls fn for every available command of the tree, parents first.
func cmdWalk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && sub.Name() != "help" {
			cmdWalk(sub, fn)
		}
	}
}

func samplesFile(name string) string { return samples.Payloads[name].File }

// samplesEvent signs body as the connector's vendor would, with sec.
func samplesEvent(name string, body []byte, base string, sec connector.Secret) (events.APIGatewayV2HTTPRequest, error) {
	return samples.WebhookEvent(name, body, samples.Payloads[name].ContentType, base, sec, time.Now())
}

// Off a terminal the helper prints plain count lines; with quiet (--json) nothing.
func TestProgressPlainAndQuiet(t *testing.T) {
	var buf bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetErr(&buf)
	p := newProgress(cmd, "replay", 20, false)
	for i := 0; i < 20; i++ {
		p.Add(1)
	}
	p.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 10 || lines[len(lines)-1] != "replay: 20/20" || !strings.Contains(lines[0], "replay: 2/20, ETA") {
		t.Errorf("plain progress:\n%s", buf.String())
	}
	buf.Reset()
	q := newProgress(cmd, "replay", 20, true)
	q.Add(20)
	q.Finish()
	if buf.Len() != 0 {
		t.Errorf("quiet progress wrote %q", buf.String())
	}
}

// docs/cli.md is the command tree rendered by cobra's doc generator; -update regenerates it.
func TestCLIDocsCurrent(t *testing.T) {
	t.Setenv(stackEnv, "")
	got := renderCLIDocs(t)
	const path = "../../docs/cli.md"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(want, got) {
		t.Errorf("docs/cli.md is stale (%v): regenerate with go test ./cmd/crmsync -run TestCLIDocsCurrent -update", err)
	}
}

func renderCLIDocs(t *testing.T) []byte {
	t.Helper()
	root := newRoot()
	var buf bytes.Buffer
	buf.WriteString("# crmsync command reference\n\n<!-- Generated from the command tree (cmd/crmsync) by cobra/doc; do not edit.\n" +
		"     Regenerate: go test ./cmd/crmsync -run TestCLIDocsCurrent -update -->\n\n")
	anchor := func(name string) string {
		base := strings.TrimSuffix(filepath.Base(name), ".md")
		return "#" + strings.ReplaceAll(base, "_", "-")
	}
	var err error
	cmdWalk(root, func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		if err == nil {
			err = doc.GenMarkdownCustom(c, &buf, anchor)
		}
		buf.WriteString("\n")
	})
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}
