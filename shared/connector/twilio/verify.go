package twilio

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/url"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/connector"
)

// SecretPublicURL is the optional secret field holding the exact webhook URL configured at Twilio
// (e.g. https://hooks.example.com/prod/webhooks/twilio). Its query and #fragment (connection
// overrides such as #rc=3&rt=5000) are ignored: Twilio signs the URL it called, whose query the
// request carries. It is tried first, before the URLs rebuilt from the request.
const SecretPublicURL = "public_url"

// SecretSharedKey is the optional secret field holding the secret of the SharedKey a Twilio
// Webhooks Rule signs with (current, then previous during rotation).
const SecretSharedKey = "shared_key"

// headerSignatureSettings announces a signature made under a Webhooks Rule: "key=<SharedKey
// id>,algorithm=HMAC_SHA256" (or HMAC_SHA1). Without it the auth token and HMAC-SHA1 sign.
const headerSignatureSettings = "x-twilio-webhooks-signature-settings"

// signing is how a delivery was signed: the candidate keys, the hash and what to call it in a
// refusal.
type signing struct {
	keys    []string
	newHash func() hash.Hash
	scheme  string
}

// Verify checks X-Twilio-Signature: base64(HMAC(key, URL + the body's form parameters sorted by
// name)), or over the URL alone when the URL carries bodySHA256 (JSON bodies), after checking
// that the body hashes to it. The key and hash are the auth_token (current, then previous) and
// SHA-1, unless X-Twilio-Webhooks-Signature-Settings says a Webhooks Rule signed it: then the
// shared_key field (current, then previous) and the header's algorithm (HMAC_SHA1 or HMAC_SHA256).
//
// The URL is every one of PublicURLCandidates, each as given and with the scheme's default port
// toggled. A refusal names the URLs tried (without any credentials in them); never the signature
// or a key. Twilio signs no timestamp.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, _ time.Time) (connector.Verified, error) {
	sigText := strings.TrimSpace(req.Header(headerSignature))
	if sigText == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing X-Twilio-Signature", connector.ErrUnauthenticated)
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed X-Twilio-Signature", connector.ErrUnauthenticated)
	}
	how, err := signingOf(req, sec)
	if err != nil {
		return connector.Verified{}, err
	}
	candidates := PublicURLCandidates(req, sec)
	if len(candidates) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no public URL to verify against", connector.ErrUnauthenticated)
	}
	var suffix string
	want, ok := bodySHA256(req.PublicURL)
	if !ok && req.RawQuery != "" {
		want, ok = bodySHA256("?" + req.RawQuery)
	}
	if ok {
		got := sha256.Sum256(req.Body)
		wantBytes, err := hex.DecodeString(strings.ToLower(want))
		if err != nil || !hmac.Equal(got[:], wantBytes) {
			return connector.Verified{}, fmt.Errorf("%w: body does not match bodySHA256", connector.ErrUnauthenticated)
		}
	} else {
		params, err := url.ParseQuery(string(req.Body))
		if err != nil {
			return connector.Verified{}, fmt.Errorf("%w: malformed form body", connector.ErrUnauthenticated)
		}
		suffix = SortedParams(params)
	}
	var tried []string
	for _, candidate := range candidates {
		tried = append(tried, URLVariants(candidate)...)
	}
	for _, key := range how.keys {
		for _, u := range tried {
			m := hmac.New(how.newHash, []byte(key))
			m.Write([]byte(u + suffix))
			if hmac.Equal(m.Sum(nil), sig) {
				return connector.Verified{}, nil
			}
		}
	}
	shown := make([]string, len(tried))
	for i, u := range tried {
		shown[i] = withoutUserinfo(u)
	}
	return connector.Verified{}, fmt.Errorf("%w: %s does not match for any URL tried: %s", connector.ErrUnauthenticated,
		how.scheme, strings.Join(shown, " "))
}

// signingOf returns the keys and hash a delivery is signed with (see Verify).
func signingOf(req *connector.Request, sec connector.Secret) (signing, error) {
	settings := strings.TrimSpace(req.Header(headerSignatureSettings))
	if settings == "" {
		tokens := sec.Values(SecretAuthToken)
		if len(tokens) == 0 {
			return signing{}, fmt.Errorf("%w: no %s configured", connector.ErrUnauthenticated, SecretAuthToken)
		}
		return signing{keys: tokens, newHash: sha1.New, scheme: "X-Twilio-Signature (auth token, HMAC-SHA1)"}, nil
	}
	var keyID, algorithm string
	for _, part := range strings.Split(settings, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "key":
			keyID = printable(strings.TrimSpace(value))
		case "algorithm":
			algorithm = printable(strings.TrimSpace(value))
		}
	}
	rule := fmt.Sprintf("signed under a Twilio Webhooks Rule (X-Twilio-Webhooks-Signature-Settings key=%s, algorithm=%s)", keyID, algorithm)
	var newHash func() hash.Hash
	switch strings.ToUpper(algorithm) {
	case "HMAC_SHA256":
		newHash = sha256.New
	case "HMAC_SHA1":
		newHash = sha1.New
	default:
		return signing{}, fmt.Errorf("%w: %s: unsupported algorithm (HMAC_SHA1 and HMAC_SHA256 are supported)", connector.ErrUnauthenticated, rule)
	}
	keys := sec.Values(SecretSharedKey)
	if len(keys) == 0 {
		return signing{}, fmt.Errorf("%w: %s, and the secret has no %s (the SharedKey's secret) to verify it", connector.ErrUnauthenticated,
			rule, SecretSharedKey)
	}
	return signing{keys: keys, newHash: newHash, scheme: "X-Twilio-Signature (" + rule + ")"}, nil
}

// printable keeps a header value fit for a log line: at most 80 printable ASCII characters.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 80 {
			break
		}
		if r > ' ' && r < 0x7f {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// PublicURLCandidates returns the URLs a callback may have been signed for, in the order Verify
// tries them (each then also with the default port toggled, see URLVariants):
//
//  1. the configured public_url (current, then previous), with the request's query;
//  2. req.PublicURL, as the webhook function built it (PUBLIC_BASE_URL, which may carry a base
//     path, else the request context with its stage; see ingest.NewRequest);
//  3. req.PublicURL's scheme and host with the raw path as API Gateway reported it (not the
//     Host header: a client could name another host there);
//  4. each of those without its first path segment when at least two segments remain: a stage
//     name API Gateway put in the raw path that the URL Twilio called does not have.
func PublicURLCandidates(req *connector.Request, sec connector.Secret) []string {
	var out []string
	seen := map[string]bool{}
	add := func(u string) {
		if u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	// The query Twilio called with: req.PublicURL's (built from the request), else the raw query.
	query := ""
	if req.RawQuery != "" {
		query = "?" + req.RawQuery
	}
	if _, _, rest, ok := splitURL(req.PublicURL); ok {
		query, _, _ = strings.Cut(rest, "#")
	}
	for _, configured := range sec.Values(SecretPublicURL) {
		configured, _, _ = strings.Cut(strings.TrimSpace(configured), "#")
		configured, _, _ = strings.Cut(configured, "?")
		if strings.Contains(configured, "://") {
			add(configured + query)
		}
	}
	add(req.PublicURL)
	if origin, _, _, ok := splitURL(req.PublicURL); ok && strings.HasPrefix(req.Path, "/") && !strings.ContainsAny(req.Path, "?#") {
		add(origin + req.Path + query)
	}
	for _, u := range append([]string(nil), out...) {
		add(withoutFirstSegment(u))
	}
	return out
}

// splitURL splits an absolute URL into scheme://authority, path and the rest (?query#fragment).
func splitURL(raw string) (origin, path, rest string, ok bool) {
	i := strings.Index(raw, "://")
	if i < 0 {
		return "", "", "", false
	}
	after := raw[i+3:]
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		return raw, "", "", true
	}
	origin, tail := raw[:i+3+end], after[end:]
	p := strings.IndexAny(tail, "?#")
	if p < 0 {
		return origin, tail, "", true
	}
	return origin, tail[:p], tail[p:], true
}

// withoutFirstSegment drops the first segment of an absolute URL's path when at least two
// segments remain ("" otherwise).
func withoutFirstSegment(raw string) string {
	origin, path, rest, ok := splitURL(raw)
	if !ok || !strings.HasPrefix(path, "/") {
		return ""
	}
	segments := strings.Split(path[1:], "/")
	if len(segments) < 3 || segments[0] == "" {
		return ""
	}
	return origin + "/" + strings.Join(segments[1:], "/") + rest
}

// withoutUserinfo removes credentials (user:password@) from an absolute URL for logging.
func withoutUserinfo(raw string) string {
	origin, path, rest, ok := splitURL(raw)
	if !ok {
		return raw
	}
	i := strings.Index(origin, "://")
	if at := strings.LastIndexByte(origin[i+3:], '@'); at >= 0 {
		origin = origin[:i+3] + origin[i+3+at+1:]
	}
	return origin + path + rest
}
