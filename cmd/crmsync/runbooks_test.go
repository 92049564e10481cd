package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every `crmsync ...` command a runbook or doc names must exist, with the flags it uses: an
// on-call engineer following a runbook at 3 a.m. must never meet "unknown command".
func TestRunbookCommandsExist(t *testing.T) {
	files, err := filepath.Glob("../../docs/runbooks/*.md")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../../docs/*.md")
	files = append(files, more...)
	files = append(files, "../../README.md")
	if len(files) < 2 {
		t.Fatalf("no runbooks found under docs/runbooks")
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range commandsIn(string(b)) {
			checked++
			args := strings.Fields(c)
			root := newRoot()
			cmd, rest, err := root.Find(args)
			if err != nil || cmd == root {
				t.Errorf("%s: `crmsync %s`: no such command", filepath.Base(f), c)
				continue
			}
			for _, a := range rest {
				if !strings.HasPrefix(a, "--") {
					continue
				}
				name := strings.SplitN(strings.TrimPrefix(a, "--"), "=", 2)[0]
				if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil && root.PersistentFlags().Lookup(name) == nil {
					t.Errorf("%s: `crmsync %s`: %s has no flag --%s", filepath.Base(f), c, cmd.CommandPath(), name)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatalf("found no crmsync commands in the runbooks")
	}
}

var (
	inlineCode = regexp.MustCompile("`([^`]+)`")
	invocation = regexp.MustCompile(`(?:^|[\s$;(]|\./)(?:crmsync|go run \./cmd/crmsync|bin/crmsync) +([a-z][^#|;]*)`)
)

// commandsIn returns the arguments of every crmsync invocation written as code: inline code
// spans and fenced code blocks (prose that merely mentions crmsync is not a command).
func commandsIn(doc string) []string {
	var code []string
	fenced := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			code = append(code, line)
			continue
		}
		for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
			code = append(code, m[1])
		}
	}
	var out []string
	for _, c := range code {
		for _, m := range invocation.FindAllStringSubmatch(c, -1) {
			args := strings.TrimSpace(m[1])
			// Placeholders such as <key> or [--dry-run] stand for values and optional flags.
			args = regexp.MustCompile(`<[^>]*>|\.\.\.`).ReplaceAllString(args, "X")
			args = strings.NewReplacer("[", " ", "]", " ", "|", " ").Replace(args)
			out = append(out, args)
		}
	}
	return out
}
