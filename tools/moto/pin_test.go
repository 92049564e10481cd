package moto

import (
	"os"
	"regexp"
	"testing"
)

// TestVersionPinnedEverywhere holds the three places that name the moto release in step: this
// package's Version, the Makefile's MOTO_VERSION (checked by `make check-moto`) and the patched
// moto_server's MOTO_VERSION (which refuses another release).
func TestVersionPinnedEverywhere(t *testing.T) {
	for file, re := range map[string]*regexp.Regexp{
		"../../Makefile": regexp.MustCompile(`(?m)^MOTO_VERSION := (\S+)$`),
		"patched.py":     regexp.MustCompile(`(?m)^MOTO_VERSION = "([^"]+)"$`),
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(data)
		if m == nil {
			t.Errorf("%s: no moto version pin found (want a line matching %s)", file, re)
			continue
		}
		if got := string(m[1]); got != Version {
			t.Errorf("%s pins moto %s, tools/moto.Version is %s: keep them in step", file, got, Version)
		}
	}
}
