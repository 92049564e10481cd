package twilio

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/ingest"
)

// apigwEvent is an API Gateway HTTP API (payload 2.0) delivery of p to domain, with rawPath and
// stage as API Gateway reports them, signed by Twilio for signedURL.
func apigwEvent(t *testing.T, domain, rawPath, stage, signedURL string, p url.Values, tok string) events.APIGatewayV2HTTPRequest {
	t.Helper()
	r := formReq(signedURL, p, "")
	if err := New().Sign(r, secret(tok, ""), time.Now()); err != nil {
		t.Fatal(err)
	}
	return events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "POST /webhooks/twilio", RawPath: rawPath,
		Headers: map[string]string{
			"host": domain, "x-forwarded-proto": "https", "x-forwarded-port": "443",
			"content-type": "application/x-www-form-urlencoded", headerSignature: r.Headers[headerSignature],
		},
		Body: p.Encode(),
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey: "POST /webhooks/twilio", Stage: stage, DomainName: domain,
			DomainPrefix: strings.Split(domain, ".")[0],
			HTTP:         events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "POST", Path: rawPath},
		},
	}
}

// Callbacks signed for the URL Twilio was given verify behind API Gateway as deployed: a custom
// domain with an API mapping key, a named stage, with the URL configured or rebuilt.
func TestVerifyBehindAPIGateway(t *testing.T) {
	const mapped = "https://hooks.example.com/prod/webhooks/twilio"
	const execute = "abc123defg.execute-api.us-east-1.amazonaws.com"
	p := statusParams()
	withURL := func(u string) connector.Secret {
		s := secret("cur", "")
		s.Current[SecretPublicURL] = u
		return s
	}
	tests := []struct {
		name, domain, rawPath, stage, base, signed string
		sec                                        connector.Secret
	}{
		// Custom domain hooks.example.com, API mapping key "prod" on the $default stage.
		{"mapping key in rawPath, base URL with base path", "hooks.example.com", "/prod/webhooks/twilio", "$default",
			"https://hooks.example.com/prod", mapped, secret("cur", "")},
		{"mapping key in rawPath, rebuilt", "hooks.example.com", "/prod/webhooks/twilio", "$default", "", mapped, secret("cur", "")},
		{"mapping key not in rawPath, base URL with base path", "hooks.example.com", "/webhooks/twilio", "$default",
			"https://hooks.example.com/prod", mapped, secret("cur", "")},
		// The mapping key "prod" selects the named stage "live"; rawPath carries the stage instead.
		{"stage in rawPath behind a mapping key, base URL", "hooks.example.com", "/live/webhooks/twilio", "live",
			"https://hooks.example.com/prod", mapped, secret("cur", "")},
		{"stage in rawPath behind a mapping key, configured public_url with overrides", "hooks.example.com", "/live/webhooks/twilio", "live",
			"", mapped, withURL(mapped + "#rc=3&rt=5000")},
		{"configured public_url beats a stale base URL", "hooks.example.com", "/webhooks/twilio", "$default",
			"https://old.example.com", mapped, withURL(mapped)},
		// A custom domain mapped at its root to the named stage "live": no stage in the URL.
		{"custom domain root mapping to a named stage, rebuilt", "hooks.example.com", "/live/webhooks/twilio", "live", "",
			"https://hooks.example.com/webhooks/twilio", secret("cur", "")},
		// The default endpoint with a named stage: the stage is part of the URL.
		{"named stage in rawPath, rebuilt", execute, "/live/webhooks/twilio", "live", "",
			"https://" + execute + "/live/webhooks/twilio", secret("cur", "")},
		{"named stage not in rawPath, rebuilt", execute, "/webhooks/twilio", "live", "",
			"https://" + execute + "/live/webhooks/twilio", secret("cur", "")},
		{"named stage, base URL with the stage", execute, "/live/webhooks/twilio", "live", "https://" + execute + "/live",
			"https://" + execute + "/live/webhooks/twilio", secret("cur", "")},
		{"named stage, base URL without the stage", execute, "/live/webhooks/twilio", "live", "https://" + execute,
			"https://" + execute + "/live/webhooks/twilio", secret("cur", "")},
		{"named stage signed with :443", execute, "/live/webhooks/twilio", "live", "",
			"https://" + execute + ":443/live/webhooks/twilio", secret("cur", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := apigwEvent(t, tt.domain, tt.rawPath, tt.stage, tt.signed, p, "cur")
			req := ingest.NewRequest(ev, []byte(ev.Body), tt.base, time.Now())
			if _, err := New().Verify(req, tt.sec, time.Now()); err != nil {
				t.Errorf("Verify() = %v (public URL %s)", err, req.PublicURL)
			}
		})
	}
}

// NewRequest rebuilds the URL Twilio called: the base path is not doubled, the stage is added on
// the default endpoint and dropped on a custom domain.
func TestNewRequestPublicURL(t *testing.T) {
	const execute = "abc123defg.execute-api.us-east-1.amazonaws.com"
	tests := []struct{ domain, rawPath, stage, base, want string }{
		{"hooks.example.com", "/prod/webhooks/twilio", "$default", "https://hooks.example.com/prod", "https://hooks.example.com/prod/webhooks/twilio"},
		{"hooks.example.com", "/webhooks/twilio", "$default", "https://hooks.example.com/prod/", "https://hooks.example.com/prod/webhooks/twilio"},
		{"hooks.example.com", "/live/webhooks/twilio", "live", "https://hooks.example.com/prod", "https://hooks.example.com/prod/webhooks/twilio"},
		{"hooks.example.com", "/live/webhooks/twilio", "live", "", "https://hooks.example.com/webhooks/twilio"},
		{execute, "/webhooks/twilio", "live", "", "https://" + execute + "/live/webhooks/twilio"},
		{execute, "/live/webhooks/twilio", "live", "", "https://" + execute + "/live/webhooks/twilio"},
		{execute, "/webhooks/twilio", "$default", "", "https://" + execute + "/webhooks/twilio"},
		{execute, "/webhooks/twilio", "", "https://hooks.example.com", "https://hooks.example.com/webhooks/twilio"},
	}
	for _, tt := range tests {
		ev := apigwEvent(t, tt.domain, tt.rawPath, tt.stage, "https://x/", url.Values{}, "cur")
		ev.RawQueryString = "a=1"
		if got := ingest.NewRequest(ev, nil, tt.base, time.Now()).PublicURL; got != tt.want+"?a=1" {
			t.Errorf("NewRequest(%s %s stage %q base %q).PublicURL = %q, want %q", tt.domain, tt.rawPath, tt.stage, tt.base, got, tt.want+"?a=1")
		}
	}
}

// A refused callback names every URL tried (without credentials), never the token or signature.
func TestVerifyFailureNamesURLsTried(t *testing.T) {
	ev := apigwEvent(t, "hooks.example.com", "/webhooks/twilio", "$default", "https://elsewhere.example.com/webhooks/twilio", statusParams(), "tok9f3a")
	req := ingest.NewRequest(ev, []byte(ev.Body), "https://hooks.example.com", time.Now())
	sec := secret("tok9f3a", "")
	sec.Current[SecretPublicURL] = "https://user:pw@hooks.example.com/prod/webhooks/twilio"
	_, err := New().Verify(req, sec, time.Now())
	if !errors.Is(err, connector.ErrUnauthenticated) {
		t.Fatalf("Verify() = %v, want ErrUnauthenticated", err)
	}
	msg := err.Error()
	for _, want := range []string{"https://hooks.example.com/webhooks/twilio", "https://hooks.example.com:443/webhooks/twilio", "https://hooks.example.com/prod/webhooks/twilio"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %s", msg, want)
		}
	}
	for _, secretText := range []string{"tok9f3a", "pw@", req.Headers[headerSignature]} {
		if strings.Contains(msg, secretText) {
			t.Errorf("error %q leaks %q", msg, secretText)
		}
	}
}

// Callbacks signed under a Webhooks Rule carry X-Twilio-Webhooks-Signature-Settings and are signed
// with the Setting's shared key and algorithm over the same URL and parameters.
func TestVerifyWebhooksRuleSignature(t *testing.T) {
	const u = "https://hooks.example.com/webhooks/twilio"
	p := statusParams()
	sign := func(key string) string {
		h := hmac.New(sha256.New, []byte(key))
		h.Write([]byte(u + SortedParams(p)))
		return base64.StdEncoding.EncodeToString(h.Sum(nil))
	}
	req := func(sig, settings string) *connector.Request {
		r := formReq(u, p, sig)
		r.Headers[headerSignatureSettings] = settings
		return r
	}
	shared := secret("authtok", "")
	shared.Current[SecretSharedKey] = "sk-new"
	shared.Previous = map[string]string{SecretSharedKey: "sk-old"}
	const settings = "key=webhooks_sharedkey_01jx0000000000000000000000,algorithm=HMAC_SHA256"
	if _, err := New().Verify(req(sign("sk-new"), settings), shared, time.Now()); err != nil {
		t.Errorf("current shared key: %v", err)
	}
	if _, err := New().Verify(req(sign("sk-old"), settings), shared, time.Now()); err != nil {
		t.Errorf("previous shared key: %v", err)
	}
	// The auth token does not verify a Rule signature, nor the shared key a plain one.
	if _, err := New().Verify(req(sign("authtok"), settings), shared, time.Now()); err == nil {
		t.Error("auth token accepted for a Webhooks Rule signature")
	}
	_, err := New().Verify(req(sign("sk-new"), settings), secret("authtok", ""), time.Now())
	if !errors.Is(err, connector.ErrUnauthenticated) || !strings.Contains(err.Error(), "X-Twilio-Webhooks-Signature-Settings") ||
		!strings.Contains(err.Error(), SecretSharedKey) {
		t.Errorf("no shared key configured: %v, want a reason naming the header and %s", err, SecretSharedKey)
	}
	_, err = New().Verify(req(sign("sk-new"), "key=x,algorithm=HMAC_MD5"), shared, time.Now())
	if !errors.Is(err, connector.ErrUnauthenticated) || !strings.Contains(err.Error(), "HMAC_MD5") {
		t.Errorf("unsupported algorithm: %v", err)
	}
	// HMAC_SHA1 under a Rule is the classic hash with the shared key.
	r := formReq(u, p, "")
	if err := New().Sign(r, secret("sk-new", ""), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := New().Verify(req(r.Headers[headerSignature], "key=x,algorithm=HMAC_SHA1"), shared, time.Now()); err != nil {
		t.Errorf("HMAC_SHA1 rule: %v", err)
	}
}
