package localcloud

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// APIRoute is one HTTP API route and the function behind it.
type APIRoute struct {
	Method     string
	Path       string // may hold {name} and a trailing {proxy+}
	Function   string
	Authorizer string
}

// HTTPAPI serves routes the way API Gateway HTTP API does with payload format 2.0: each request
// becomes an APIGatewayV2HTTPRequest event for the route's function, and the function's
// APIGatewayV2HTTPResponse becomes the HTTP answer.
type HTTPAPI struct {
	Routes  []APIRoute
	Invoker Invoker
	Log     *slog.Logger
	// MaxPayload is API Gateway's request size limit (10 MB); larger requests get 413 before
	// any function runs.
	MaxPayload int64
	// Extra, when set, serves paths no route claims (the local control endpoints).
	Extra http.Handler
}

// textTypes are the media types API Gateway passes as text; anything else is base64-encoded.
func isText(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	switch {
	case ct == "", strings.HasPrefix(ct, "text/"), strings.HasSuffix(ct, "+json"), strings.HasSuffix(ct, "+xml"):
		return true
	}
	switch ct {
	case "application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded":
		return true
	}
	return false
}

func matchPath(pattern, path string) (map[string]string, bool) {
	pp := strings.Split(strings.Trim(pattern, "/"), "/")
	sp := strings.Split(strings.Trim(path, "/"), "/")
	params := map[string]string{}
	for i, seg := range pp {
		if strings.HasSuffix(seg, "+}") && strings.HasPrefix(seg, "{") {
			params[seg[1:len(seg)-2]] = strings.Join(sp[min(i, len(sp)):], "/")
			return params, true
		}
		if i >= len(sp) {
			return nil, false
		}
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			params[seg[1:len(seg)-1]] = sp[i]
			continue
		}
		if seg != sp[i] {
			return nil, false
		}
	}
	return params, len(pp) == len(sp)
}

func writeJSONMessage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// ServeHTTP implements http.Handler.
func (a *HTTPAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var route *APIRoute
	var params map[string]string
	for i := range a.Routes {
		rt := &a.Routes[i]
		if rt.Method != "ANY" && rt.Method != r.Method {
			continue
		}
		if p, ok := matchPath(rt.Path, r.URL.Path); ok {
			route, params = rt, p
			break
		}
	}
	if route == nil {
		if a.Extra != nil {
			a.Extra.ServeHTTP(w, r)
			return
		}
		writeJSONMessage(w, http.StatusNotFound, "Not Found")
		return
	}
	if route.Authorizer == "AWS_IAM" && !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		// API Gateway refuses unsigned requests to IAM routes before the function runs.
		writeJSONMessage(w, http.StatusForbidden, "Forbidden")
		return
	}
	limit := a.MaxPayload
	if limit <= 0 {
		limit = 10 << 20
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		writeJSONMessage(w, http.StatusBadRequest, "Bad Request")
		return
	}
	if int64(len(body)) > limit {
		writeJSONMessage(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	ev := a.event(r, route, params, body)
	payload, err := json.Marshal(ev)
	if err != nil {
		writeJSONMessage(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	out, err := a.Invoker.Invoke(r.Context(), route.Function, payload)
	if err != nil {
		writeJSONMessage(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	writeResponse(w, out)
}

func (a *HTTPAPI) event(r *http.Request, route *APIRoute, params map[string]string, body []byte) events.APIGatewayV2HTTPRequest {
	headers := map[string]string{}
	var cookies []string
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == "cookie" {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					cookies = append(cookies, strings.TrimSpace(c))
				}
			}
			continue
		}
		headers[lk] = strings.Join(vs, ",")
	}
	headers["host"] = r.Host
	if r.ContentLength >= 0 && len(body) > 0 {
		headers["content-length"] = strconv.Itoa(len(body))
	}
	headers["x-forwarded-proto"] = "http"
	host, port, _ := net.SplitHostPort(r.Host)
	if port != "" {
		headers["x-forwarded-port"] = port
	}
	var qs map[string]string
	if q := r.URL.Query(); len(q) > 0 {
		qs = map[string]string{}
		for k, vs := range q {
			qs[k] = strings.Join(vs, ",")
		}
	}
	srcIP, _, _ := net.SplitHostPort(r.RemoteAddr)
	now := time.Now().UTC()
	ev := events.APIGatewayV2HTTPRequest{
		Version:               "2.0",
		RouteKey:              route.Method + " " + route.Path,
		RawPath:               r.URL.Path,
		RawQueryString:        r.URL.RawQuery,
		Cookies:               cookies,
		Headers:               headers,
		QueryStringParameters: qs,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:     route.Method + " " + route.Path,
			AccountID:    AccountID,
			Stage:        "$default",
			RequestID:    RequestID(),
			APIID:        "local",
			DomainName:   r.Host,
			DomainPrefix: strings.SplitN(firstNonEmpty(host, r.Host), ".", 2)[0],
			Time:         now.Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:    now.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: r.Method, Path: r.URL.Path, Protocol: r.Proto, SourceIP: srcIP, UserAgent: r.UserAgent(),
			},
		},
	}
	if route.Authorizer == "AWS_IAM" {
		ev.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{IAM: iamCaller(r.Header.Get("Authorization"))}
	}
	if len(params) > 0 {
		ev.PathParameters = params
	}
	if len(body) > 0 {
		if isText(r.Header.Get("Content-Type")) {
			ev.Body = string(body)
		} else {
			ev.Body = base64.StdEncoding.EncodeToString(body)
			ev.IsBase64Encoded = true
		}
	}
	return ev
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// writeResponse turns a function's answer into the HTTP response. Like API Gateway, an answer
// without a statusCode is treated as a 200 JSON body.
func writeResponse(w http.ResponseWriter, out []byte) {
	var resp events.APIGatewayV2HTTPResponse
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(out, &probe); err != nil || probe["statusCode"] == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
		return
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		writeJSONMessage(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	keys := make([]string, 0, len(resp.Headers))
	for k := range resp.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w.Header().Set(k, resp.Headers[k])
	}
	for k, vs := range resp.MultiValueHeaders {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	for _, c := range resp.Cookies {
		w.Header().Add("Set-Cookie", c)
	}
	body := []byte(resp.Body)
	if resp.IsBase64Encoded {
		if b, err := base64.StdEncoding.DecodeString(resp.Body); err == nil {
			body = b
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// LocalPrincipal is the IAM principal the local stack reports for a request signed with access
// key id: a user of the local account named after the key (the ops tool signs with "test", so its
// requests come from arn:aws:iam::123456789012:user/test). API Gateway reports the signer's real
// principal; locally there is no IAM, so the key names it.
func LocalPrincipal(accessKeyID string) string {
	return "arn:aws:iam::" + AccountID + ":user/" + accessKeyID
}

var credentialRe = regexp.MustCompile(`Credential=([A-Za-z0-9_+=,.@-]+)/`)

// iamCaller is the IAM authorizer context of a SigV4-signed request (see LocalPrincipal).
func iamCaller(authorization string) *events.APIGatewayV2HTTPRequestContextAuthorizerIAMDescription {
	m := credentialRe.FindStringSubmatch(authorization)
	if m == nil {
		return &events.APIGatewayV2HTTPRequestContextAuthorizerIAMDescription{}
	}
	return &events.APIGatewayV2HTTPRequestContextAuthorizerIAMDescription{AccessKey: m[1], AccountID: AccountID,
		CallerID: m[1], UserARN: LocalPrincipal(m[1]), UserID: m[1]}
}
