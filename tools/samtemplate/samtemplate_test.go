package samtemplate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// update regenerates the golden files: go test ./tools/samtemplate/ -run TestTemplateGolden -update
var update = flag.Bool("update", false, "regenerate the golden files in testdata/")

// repoTemplate is the repository's SAM template.
const repoTemplate = "../../template.yaml"

// goldenCases are the parameter sets the repository's template is parsed with: the zero options
// (tools/alarms), the local stack's (tools/localcloud, shared/worker) and a fully overridden one.
var goldenCases = []struct {
	name string
	opts Options
}{
	{"defaults", Options{}},
	{"localstack", Options{StackName: "crmsync-test-worker", AccountID: "123456789012"}},
	{"prod", Options{StackName: "crmsync-prod", Region: "eu-west-1", AccountID: "210987654321", Parameters: map[string]string{
		"Stage": "prod", "AlarmEmail": "ops@example.com", "PublicBaseUrl": "https://hooks.example.com",
		"InternalEmailDomains": "example.com,example.org",
	}}},
}

// goldenView is what the golden files hold: everything Parse produces plus the function models.
type goldenView struct {
	Raw       map[string]any
	Resources map[string]Resource
	Outputs   map[string]string
	Functions []Function
}

// TestTemplateGolden parses template.yaml with each parameter set and compares the result with
// testdata/<case>.golden.json.
func TestTemplateGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Load(repoTemplate, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			fns, err := tmpl.Functions()
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(goldenView{Raw: tmpl.Raw, Resources: tmpl.Resources, Outputs: tmpl.Outputs, Functions: fns}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the parsed template:\n%s", path, firstDiff(string(want), string(got)))
			}
		})
	}
}

// firstDiff describes the first line where want and got differ.
func firstDiff(want, got string) string {
	wl, gl := bytes.Split([]byte(want), []byte("\n")), bytes.Split([]byte(got), []byte("\n"))
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g []byte
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if !bytes.Equal(w, g) {
			return "line " + itoa(i+1) + ":\n  want: " + string(w) + "\n  got:  " + string(g)
		}
	}
	return "(no line differs)"
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
