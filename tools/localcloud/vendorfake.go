package localcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// VendorFakes serves local stand-ins for the vendor REST APIs that hydration and listing call.
// Microsoft Graph's stateful parts are served too (below): the identity platform's token
// endpoint (prefix msgraph-login), Graph's subscriptions, and bearer-token checks.
// A GET for /<vendor>/<path> answers with the fixture file <Dir>/<vendor>/<path>.json (the
// fixtures follow the vendors' documented response shapes); tests and rehearsals can also PUT a
// body at any path (and DELETE it) to change what the fake answers — with a header
// X-Fake-Status: <code> the fake answers that status with the body (e.g. 500 to rehearse a
// vendor outage) — and DELETE restores the fixture. Unknown paths get the vendor-style 404.
type VendorFakes struct {
	Dir string
	mu  sync.RWMutex
	set map[string]fakeAnswer

	graphOnce sync.Once
	graph     *graphFake

	faults *vendorFaulter // SetFaults; nil: none
}

// FakeStatusHeader is the PUT header that sets the status the fake answers with.
const FakeStatusHeader = "X-Fake-Status"

// FakeResetHeader on a DELETE removes the answer a PUT set, even at a path whose DELETE is an
// API call of the fake (a Graph subscription).
const FakeResetHeader = "X-Fake-Reset"

type fakeAnswer struct {
	status int
	body   []byte
}

// BaseURLEnv maps the function environment variables that hold vendor API base URLs to the
// fake's vendor prefix.
var BaseURLEnv = map[string]string{
	"META_GRAPH_BASE_URL":    "meta-graph",
	"MSGRAPH_BASE_URL":       "msgraph",
	"MSGRAPH_LOGIN_BASE_URL": "msgraph-login",
	"TWILIO_API_BASE_URL":    "twilio",
	"CALENDLY_API_BASE_URL":  "calendly",
	"MAILGUN_API_BASE_URL":   "mailgun",
	"TYPEFORM_API_BASE_URL":  "typeform",
}

func (v *VendorFakes) key(p string) string { return path.Clean("/" + p) }

// answerKey is the key of the answer a request gets: its path, plus "@<token>" for a Graph
// delta page ($skiptoken; the fixture <path>@<token>.json).
func (v *VendorFakes) answerKey(r *http.Request) string {
	k := v.key(r.URL.Path)
	if t := r.URL.Query().Get("$skiptoken"); t != "" && !strings.ContainsAny(t, "/\\") {
		k += "@" + t
	}
	return k
}

// ServeHTTP implements http.Handler.
func (v *VendorFakes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if v.serveGraph(w, r) {
		return
	}
	k := v.answerKey(r)
	switch r.Method {
	case http.MethodPut:
		b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := http.StatusOK
		if h := r.Header.Get(FakeStatusHeader); h != "" {
			n, err := strconv.Atoi(h)
			if err != nil || n < 100 || n > 599 {
				http.Error(w, "bad "+FakeStatusHeader, http.StatusBadRequest)
				return
			}
			status = n
		}
		v.mu.Lock()
		if v.set == nil {
			v.set = map[string]fakeAnswer{}
		}
		v.set[k] = fakeAnswer{status: status, body: b}
		v.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodDelete:
		v.mu.Lock()
		delete(v.set, k)
		v.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet:
		if v.fault(w, r, k) {
			return
		}
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	v.mu.RLock()
	ans, ok := v.set[k]
	v.mu.RUnlock()
	body, status := ans.body, ans.status
	if !ok && v.Dir != "" && !strings.Contains(k, "..") {
		if b, err := os.ReadFile(filepath.Join(v.Dir, filepath.FromSlash(strings.TrimPrefix(k, "/"))+".json")); err == nil {
			body, status, ok = b, http.StatusOK, true
		}
	}
	if ok && strings.HasPrefix(k, "/msgraph/") {
		body = v.graphLinks(r, body)
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"message":"not found","code":404}}`))
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// ---------------------------------------------------------------------------- Microsoft Graph

// The Graph fake follows the shapes of the real APIs (microsoft-graph-docs: subscription
// resource, Create/Update/Delete subscription, subscription: reauthorize; the identity
// platform's client credentials grant):
//
//   - POST /msgraph-login/{tenant}/oauth2/v2.0/token issues a token to an app listed in the
//     fixture msgraph-login/apps.json ({"apps": [{"tenant_id", "client_id", "client_secret"}]}),
//     else answers invalid_client (401) or an unknown tenant (400) as the platform does;
//     GET /msgraph-login/tokens reports {"issued", "active"}; DELETE revokes every token issued
//     (a test's "the token expired mid-run").
//   - Under /msgraph/, a request whose bearer token the fake issued but revoked or let expire is
//     answered 401 InvalidAuthenticationToken; other tokens (the dev secret's static one) pass.
//   - /msgraph/subscriptions: POST creates (validating notificationUrl and
//     lifecycleNotificationUrl with the validationToken handshake, as Graph does), GET lists;
//     /msgraph/subscriptions/{id}: GET, PATCH (expirationDateTime), DELETE;
//     /msgraph/subscriptions/{id}/reauthorize: POST (204). A subscription needs a bearer token.
//     A PUT answer with X-Fake-Status at one of these paths makes every method there fail so
//     (until a DELETE with X-Fake-Reset).
//   - Bodies served under /msgraph/ have https://graph.microsoft.com/v1.0 replaced by the fake's
//     own base, so @odata.nextLink and @odata.deltaLink lead back to it.

// GraphTokenPrefix starts every access token the Graph fake issues.
const GraphTokenPrefix = "fake-graph-"

// graphMaxLifetime is Graph's longest subscription expiry for Outlook resources.
const graphMaxLifetime = 10080 * time.Minute

type graphFake struct {
	mu     sync.Mutex
	tokens map[string]time.Time // issued token -> expiry
	issued int
	subs   map[string]map[string]any
	seq    int
	client *http.Client
}

func (v *VendorFakes) graphState() *graphFake {
	v.graphOnce.Do(func() {
		v.graph = &graphFake{tokens: map[string]time.Time{}, subs: map[string]map[string]any{},
			client: &http.Client{Timeout: 10 * time.Second}}
	})
	return v.graph
}

// serveGraph answers the Graph fake's stateful routes and refuses stale fake tokens; it reports
// whether it answered.
func (v *VendorFakes) serveGraph(w http.ResponseWriter, r *http.Request) bool {
	k := v.key(r.URL.Path)
	g := v.graphState()
	switch {
	case strings.HasPrefix(k, "/msgraph-login/"):
		if r.Method == http.MethodPut || r.Method == http.MethodDelete && r.Header.Get(FakeResetHeader) != "" {
			return false // a test's canned answer
		}
		if ans, ok := v.override(k); ok {
			writeRaw(w, ans.status, ans.body) // a canned token answer or failure
			return true
		}
		g.login(w, r, v.Dir, k)
		return true
	case !strings.HasPrefix(k, "/msgraph/") || r.Method == http.MethodPut:
		return false
	case r.Method == http.MethodDelete && r.Header.Get(FakeResetHeader) != "":
		return false
	}
	if tok, ok := bearer(r); ok && strings.HasPrefix(tok, GraphTokenPrefix) && !g.valid(tok) {
		graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
		return true
	}
	if k != "/msgraph/subscriptions" && !strings.HasPrefix(k, "/msgraph/subscriptions/") {
		return false
	}
	if ans, ok := v.override(k); ok && ans.status != http.StatusOK {
		writeRaw(w, ans.status, ans.body)
		return true
	}
	if _, ok := bearer(r); !ok {
		graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty.")
		return true
	}
	g.subscriptions(w, r, strings.TrimPrefix(k, "/msgraph/subscriptions"))
	return true
}

func (v *VendorFakes) override(k string) (fakeAnswer, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	a, ok := v.set[k]
	return a, ok
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

func (g *graphFake) valid(tok string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	exp, ok := g.tokens[tok]
	return ok && time.Now().Before(exp)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	writeRaw(w, status, b)
}

// graphError answers Graph's error shape.
func graphError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": message,
		"innerError": map[string]string{"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": RequestID()}}})
}

// loginError answers the identity platform's error shape.
func loginError(w http.ResponseWriter, status int, code, description string, aadsts int) {
	writeJSON(w, status, map[string]any{"error": code, "error_description": fmt.Sprintf("AADSTS%d: %s", aadsts, description),
		"error_codes": []int{aadsts}, "timestamp": time.Now().UTC().Format("2006-01-02 15:04:05Z"), "trace_id": RequestID(), "correlation_id": RequestID()})
}

// login serves the token endpoint and the test's token controls.
func (g *graphFake) login(w http.ResponseWriter, r *http.Request, dir, k string) {
	if k == "/msgraph-login/tokens" {
		g.mu.Lock()
		defer g.mu.Unlock()
		switch r.Method {
		case http.MethodDelete:
			for t := range g.tokens {
				g.tokens[t] = time.Time{}
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			active := 0
			for _, exp := range g.tokens {
				if time.Now().Before(exp) {
					active++
				}
			}
			writeJSON(w, http.StatusOK, map[string]int{"issued": g.issued, "active": active})
		}
		return
	}
	parts := strings.Split(strings.TrimPrefix(k, "/msgraph-login/"), "/")
	if r.Method != http.MethodPost || len(parts) != 4 || parts[1] != "oauth2" || parts[2] != "v2.0" || parts[3] != "token" {
		loginError(w, http.StatusNotFound, "invalid_request", "The request is not valid for the application's endpoint.", 90010)
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		loginError(w, http.StatusBadRequest, "unsupported_grant_type", "The provided value for the input parameter 'grant_type' is not valid.", 70003)
		return
	}
	tenantKnown, ok := graphApp(dir, parts[0], r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"))
	switch {
	case !tenantKnown:
		loginError(w, http.StatusBadRequest, "invalid_request", "Tenant '"+parts[0]+"' not found.", 90002)
	case !ok:
		loginError(w, http.StatusUnauthorized, "invalid_client", "Invalid client secret provided.", 7000215)
	default:
		tok := g.issue()
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok})
	}
}

func (g *graphFake) issue() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.issued++
	tok := GraphTokenPrefix + strconv.Itoa(g.issued) + "-" + RequestID()
	g.tokens[tok] = time.Now().Add(3599 * time.Second)
	return tok
}

// graphApp looks the app up in <dir>/msgraph-login/apps.json.
func graphApp(dir, tenant, clientID, secret string) (tenantKnown, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, "msgraph-login", "apps.json"))
	if err != nil {
		return false, false
	}
	var f struct {
		Apps []struct {
			TenantID     string `json:"tenant_id"`
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		} `json:"apps"`
	}
	if json.Unmarshal(b, &f) != nil {
		return false, false
	}
	for _, a := range f.Apps {
		if a.TenantID == tenant {
			tenantKnown = true
			if a.ClientID == clientID && a.ClientSecret == secret {
				return true, true
			}
		}
	}
	return tenantKnown, false
}

// subscriptions serves /msgraph/subscriptions{rest}.
func (g *graphFake) subscriptions(w http.ResponseWriter, r *http.Request, rest string) {
	id, action, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	switch {
	case id == "" && r.Method == http.MethodPost:
		g.create(w, r)
	case id == "" && r.Method == http.MethodGet:
		g.mu.Lock()
		list := make([]map[string]any, 0, len(g.subs))
		for _, s := range g.subs {
			list = append(list, s)
		}
		g.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions", "value": list})
	case id != "":
		g.one(w, r, id, action)
	default:
		graphError(w, http.StatusMethodNotAllowed, "BadRequest", "Unsupported method.")
	}
}

// one serves a single subscription: GET, PATCH, DELETE, POST .../reauthorize.
func (g *graphFake) one(w http.ResponseWriter, r *http.Request, id, action string) {
	g.mu.Lock()
	sub, ok := g.subs[id]
	g.mu.Unlock()
	if !ok {
		graphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	switch {
	case action == "reauthorize" && r.Method == http.MethodPost:
		w.WriteHeader(http.StatusNoContent)
	case action != "":
		graphError(w, http.StatusBadRequest, "BadRequest", "Unsupported segment.")
	case r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, sub)
	case r.Method == http.MethodDelete:
		g.mu.Lock()
		delete(g.subs, id)
		g.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPatch:
		var body struct {
			ExpirationDateTime string `json:"expirationDateTime"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body)
		if msg := checkExpiry(body.ExpirationDateTime); msg != "" {
			graphError(w, http.StatusBadRequest, "ExtensionError", msg)
			return
		}
		g.mu.Lock()
		sub["expirationDateTime"] = body.ExpirationDateTime
		out := copyMap(sub)
		g.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	default:
		graphError(w, http.StatusMethodNotAllowed, "BadRequest", "Unsupported method.")
	}
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkExpiry returns Graph's complaint about an expirationDateTime, or "".
func checkExpiry(v string) string {
	t, err := time.Parse(time.RFC3339Nano, v)
	switch {
	case err != nil:
		return "expirationDateTime is not a valid date and time."
	case !t.After(time.Now()):
		return "Subscription expiration can only be in the future."
	case t.After(time.Now().Add(graphMaxLifetime + time.Minute)):
		return "Subscription expiration can only be 10070 minutes in the future."
	}
	return ""
}

// create validates a subscription request as Graph does and stores it.
func (g *graphFake) create(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid request body.")
		return
	}
	str := func(k string) string { s, _ := req[k].(string); return s }
	for _, k := range []string{"changeType", "notificationUrl", "resource", "expirationDateTime"} {
		if str(k) == "" {
			graphError(w, http.StatusBadRequest, "BadRequest", k+" is required.")
			return
		}
	}
	if msg := checkExpiry(str("expirationDateTime")); msg != "" {
		graphError(w, http.StatusBadRequest, "ExtensionError", msg)
		return
	}
	for _, k := range []string{"notificationUrl", "lifecycleNotificationUrl"} {
		if u := str(k); u != "" && !g.validates(r.Context(), u) {
			graphError(w, http.StatusBadRequest, "InvalidRequest",
				"Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.")
			return
		}
	}
	g.mu.Lock()
	g.seq++
	id := fmt.Sprintf("%08x-2dc5-4530-97cd-4e7ae6534c%02x", g.seq, g.seq%256)
	sub := copyMap(req)
	sub["@odata.context"] = "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity"
	sub["id"], sub["applicationId"], sub["creatorId"] = id, "24d3b144-21ae-4080-943f-7067b395b913", "8ee44408-0679-472c-bc2a-692812af3437"
	sub["notificationContentType"] = "application/json"
	if sub["latestSupportedTlsVersion"] == nil {
		sub["latestSupportedTlsVersion"] = "v1_2"
	}
	g.subs[id] = sub
	out := copyMap(sub)
	g.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

// validates runs Graph's endpoint validation: POST <url>?validationToken=<opaque>, text/plain;
// the answer must be 200 with the token as its body.
func (g *graphFake) validates(ctx context.Context, endpoint string) bool {
	token := "Validation: Testing client application reachability for subscription Request-Id: " + RequestID()
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return false
	}
	q := u.Query()
	q.Set("validationToken", token)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := g.client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK && string(b) == token
}

// graphLinks points the graph.microsoft.com links of a served body at the fake itself (as
// mounted: the request URI's prefix before the fake's own path, e.g. /_vendor).
func (v *VendorFakes) graphLinks(r *http.Request, body []byte) []byte {
	uri := strings.SplitN(r.RequestURI, "?", 2)[0]
	i := strings.Index(uri, "/msgraph/")
	if i < 0 || strings.Contains(uri[:i], "://") {
		return body
	}
	mount := uri[:i]
	base := "http://" + r.Host + mount + "/msgraph"
	return bytes.ReplaceAll(body, []byte("https://graph.microsoft.com/v1.0"), []byte(base))
}
