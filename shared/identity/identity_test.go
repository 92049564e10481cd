package identity

import "testing"

func TestEmail(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"  Ada@Example.COM ", "ada@example.com", true},
		{"Ada Lovelace <ada@example.com>", "ada@example.com", true},
		{"", "", false},
		{"not-an-email", "", false},
		{"@example.com", "", false},
		{"ada@", "", false},
	}
	for _, tt := range tests {
		got, ok := Email(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Email(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPhone(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"+1 (415) 867-5309", "+14158675309", true},
		{"415-867-5309", "+14158675309", true},
		{"+442071838750", "+442071838750", true},
		{"", "", false},
		{"abc", "", false},
		{"12", "", false},
	}
	for _, tt := range tests {
		got, ok := Phone(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Phone(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestGroupKey(t *testing.T) {
	tests := []struct {
		name           string
		emails, phones []string
		want           string
	}{
		{"email first", []string{"bad", "Ada@Example.com"}, []string{"+14158675309"}, "email:ada@example.com"},
		{"phone next", nil, []string{"x", "+1 415 867 5309"}, "phone:+14158675309"},
		{"fallback", []string{"bad"}, nil, "twilio:CA1"},
	}
	for _, tt := range tests {
		if got := GroupKey(tt.emails, tt.phones, "twilio", "CA1"); got != tt.want {
			t.Errorf("%s: GroupKey = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestFreeMailAndRedact(t *testing.T) {
	if !FreeMail("Gmail.com") || FreeMail("acme.io") {
		t.Errorf("FreeMail misclassifies gmail.com / acme.io")
	}
	if got := Redact("ada@example.com"); got == "" || got == Redact("bob@example.com") || len(got) != 14 {
		t.Errorf("Redact = %q: want a 14-char hash distinct per input", got)
	}
}
