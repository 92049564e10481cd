package policy

import (
	"errors"
	"os"
	"testing"
)

// Any policy file is either accepted or refused with errors that name the file; never a panic.
func FuzzParse(f *testing.F) {
	for _, p := range []string{realPolicy, "testdata/minimal.yaml", "testdata/broken.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("version: x\nsources: {crm: {authority: 1e999}}\n"))
	f.Add([]byte("&a [*a, *a]"))
	f.Add([]byte("entities: {contact: {groups: {g: {fields: [a, a], rule: latest}}}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse("fuzz.yaml", b)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("Parse error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range es {
				if e.File != "fuzz.yaml" {
					t.Fatalf("error %q does not name the file", e.Error())
				}
			}
			return
		}
		if p.Version() == "" {
			t.Fatal("an accepted policy has no version")
		}
	})
}
