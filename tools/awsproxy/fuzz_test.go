package awsproxy

import (
	"net/http"
	"strings"
	"testing"
)

// A fault specification parses into valid rules, and what it renders parses back to the same.
func FuzzParseRules(f *testing.F) {
	for _, s := range []string{"throttle=0.02", "all=0.1", "server-error/after=0.5@dynamodb.TransactWriteItems|sqs.*", "none", "x=y", "timeout/before=1,conflict=0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		rules, err := ParseRules(spec)
		if err != nil {
			return
		}
		if err := validate(rules); err != nil {
			t.Fatalf("ParseRules(%q) accepted invalid rules: %v", spec, err)
		}
		again, err := ParseRules(String(rules))
		if err != nil || String(again) != String(rules) {
			t.Fatalf("String/ParseRules round trip of %q: %q, %v", spec, String(again), err)
		}
	})
}

// Any request gets a name "<service>.<API>".
func FuzzClassify(f *testing.F) {
	f.Add("POST", "/", "DynamoDB_20120810.TransactWriteItems", "AWS4-HMAC-SHA256 Credential=a/b/c/dynamodb/aws4_request", "")
	f.Add("PUT", "/bucket/key", "", "AWS4-HMAC-SHA256 Credential=a/b/c/s3/aws4_request", "")
	f.Add("POST", "/", "", "", "Action=Publish")
	f.Fuzz(func(t *testing.T, method, path, target, auth, body string) {
		r, err := http.NewRequest("GET", "http://x/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Method = method
		r.URL.Path = path
		r.Header.Set("X-Amz-Target", target)
		r.Header.Set("Authorization", auth)
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		name := Classify(r, []byte(body))
		if !strings.Contains(name, ".") {
			t.Fatalf("Classify = %q, want service.API", name)
		}
	})
}
