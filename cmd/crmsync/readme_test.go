package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeCommands returns the crmsync invocations of README.md's command blocks, in order, as
// argument lists: continuation lines joined, comments cut, `crmsync` and `go run ./cmd/crmsync`
// mapped to the command tree; other lines (make, curl, the developer tool) are skipped.
func readmeCommands(t *testing.T, readme string) [][]string {
	t.Helper()
	fence := regexp.MustCompile("(?ms)^```(?:sh|bash|shell|console)?\\n(.*?)^```")
	var out [][]string
	for _, block := range fence.FindAllStringSubmatch(readme, -1) {
		text := strings.ReplaceAll(block[1], "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "$ "))
			var rest string
			switch {
			case strings.HasPrefix(line, "crmsync "):
				rest = strings.TrimPrefix(line, "crmsync ")
			case strings.HasPrefix(line, "go run ./cmd/crmsync "):
				rest = strings.TrimPrefix(line, "go run ./cmd/crmsync ")
			default:
				continue
			}
			args, err := shellWords(rest)
			if err != nil {
				t.Fatalf("README: %q: %v", line, err)
			}
			out = append(out, args)
		}
	}
	return out
}

// shellWords splits a command line as sh would for the simple quoting the README uses, stopping
// at a comment.
func shellWords(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, errUnterminated
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			i = len(s)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}

type quoteError struct{}

func (quoteError) Error() string { return "unterminated quote" }

var errUnterminated error = quoteError{}

// Every crmsync command of README.md runs as written against a local stack, as a newcomer runs
// it beside `make dev`: no flags added, no stack named, no AWS credentials. Commands are given
// a few seconds each, as a person typing them would (the worker applies changes asynchronously).
func TestReadmeCommandsRunAsWritten(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(t, string(b))
	if len(cmds) < 3 {
		t.Fatalf("found %d crmsync commands in README.md's command blocks, want at least 3", len(cmds))
	}
	s := startStack(t, true)
	asNewcomer(t, s.Addr)
	for _, args := range cmds {
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, stderr, err := runCLI(t, args...)
			if err == nil {
				t.Logf("crmsync %s:\n%s", strings.Join(args, " "), out)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("README: crmsync %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

func TestShellWords(t *testing.T) {
	got, err := shellWords(`replay k1 --reason "a fix, b" --by 'x y' # comment`)
	if err != nil || strings.Join(got, "|") != "replay|k1|--reason|a fix, b|--by|x y" {
		t.Errorf("shellWords = %q, %v", got, err)
	}
}
