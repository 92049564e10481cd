package identity

import "testing"

// Normalising an identity is idempotent, and a group key is never empty.
func FuzzNormalise(f *testing.F) {
	for _, s := range []string{"Ada Lovelace <ADA@Example.com>", "+1 (415) 555-0123", "  x@y ", "@", "<a@b>", "+", "0000000000000000000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if e, ok := Email(s); ok {
			if again, ok2 := Email(e); !ok2 || again != e {
				t.Fatalf("Email(%q) = %q, but Email(%q) = %q, %v", s, e, e, again, ok2)
			}
			_ = Domain(e)
		}
		if p, ok := Phone(s); ok {
			if again, ok2 := Phone(p); !ok2 || again != p {
				t.Fatalf("Phone(%q) = %q, but Phone(%q) = %q, %v", s, p, p, again, ok2)
			}
		}
		if GroupKey([]string{s}, []string{s}, "src", s) == "" {
			t.Fatal("empty group key")
		}
		_ = Redact(s)
	})
}
