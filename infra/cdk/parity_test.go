package main

// Parity: the CDK app declares the system template.yaml declares. template.yaml (after the SAM
// transform, by the aws-sam-translator that cfn-lint ships with) is the reference; a difference is
// reported as "<entity>: <property>: template.yaml <value>, cdk <value>".
//
// The CDK template is synthesized once per test run: in-process (placeholder binaries: the code
// assets do not take part in the comparison), or read from CRMSYNC_CDK_TEMPLATE when `make test`
// has just synthesized it with the real `make dist` output.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/jsii-runtime-go"
)

const repoRoot = "../.."

var tmpDirs []string

func TestMain(m *testing.M) {
	os.Setenv("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
	os.Setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", strings.TrimPrefix(nodeMajor(), "v"))
	code := m.Run()
	jsii.Close()
	for _, d := range tmpDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func nodeMajor() string {
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return ""
	}
	major, _, _ := strings.Cut(strings.TrimSpace(string(out)), ".")
	return major
}

// ---------------------------------------------------------------------------- the two templates

var (
	cdkOnce sync.Once
	cdkRaw  []byte
	cdkErr  error

	samOnce sync.Once
	samRaw  []byte
	samErr  error
)

// cdkTemplateJSON returns the synthesized CDK template (fresh copy each call).
func cdkTemplateJSON(t *testing.T) map[string]any {
	t.Helper()
	cdkOnce.Do(func() {
		if p := os.Getenv("CRMSYNC_CDK_TEMPLATE"); p != "" {
			cdkRaw, cdkErr = os.ReadFile(p)
			return
		}
		cdkRaw, cdkErr = synthInProcess()
	})
	if cdkErr != nil {
		t.Fatalf("synthesizing the CDK app: %v", cdkErr)
	}
	return decode(t, cdkRaw)
}

func synthInProcess() (raw []byte, err error) {
	dir, err := os.MkdirTemp("", "crmsync-cdk-parity-")
	if err != nil {
		return nil, err
	}
	tmpDirs = append(tmpDirs, dir)
	dist := filepath.Join(dir, "dist")
	for _, id := range FunctionIDs() {
		if err := os.MkdirAll(filepath.Join(dist, id), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dist, id, "bootstrap"), []byte("placeholder "+id), 0o755); err != nil {
			return nil, err
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	out := filepath.Join(dir, "cdk.out")
	synth(out, dist, "crmsync")
	return os.ReadFile(filepath.Join(out, StackID+".template.json"))
}

// samTemplateJSON returns template.yaml after the SAM transform (fresh copy each call).
func samTemplateJSON(t *testing.T) map[string]any {
	t.Helper()
	samOnce.Do(func() {
		var src []byte
		src, samErr = os.ReadFile(filepath.Join(repoRoot, "template.yaml"))
		if samErr == nil {
			samRaw, samErr = samTranslate(src)
		}
	})
	if samErr != nil {
		t.Fatal(samErr)
	}
	return decode(t, samRaw)
}

// samTranslate runs testdata/sam_translate.py: SAM template in, CloudFormation JSON out.
func samTranslate(src []byte) ([]byte, error) {
	cmd := exec.Command("python3", filepath.Join("testdata", "sam_translate.py"))
	cmd.Stdin = bytes.NewReader(src)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("SAM transform of template.yaml (python3 with cfn-lint and aws-sam-translator; "+
			"pip install cfn-lint): %v\n%s", err, stderr.String())
	}
	return out, nil
}

func decode(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("template JSON: %v", err)
	}
	return m
}

func factsOf(t *testing.T, side string, raw map[string]any) (facts, []string) {
	t.Helper()
	tpl, err := newTemplate(side, raw)
	if err != nil {
		t.Fatal(err)
	}
	return tpl.extract()
}

// parityDiffs compares two raw templates: uncovered resources first, then differences.
func parityDiffs(t *testing.T, sam, cdk map[string]any) []string {
	t.Helper()
	ref, p1 := factsOf(t, "template.yaml", sam)
	got, p2 := factsOf(t, "cdk", cdk)
	return append(append(p1, p2...), compare(ref, got)...)
}

// ---------------------------------------------------------------------------- tests

func TestParityWithTemplateYAML(t *testing.T) {
	diffs := parityDiffs(t, samTemplateJSON(t), cdkTemplateJSON(t))
	for _, d := range diffs {
		t.Error(d)
	}
	if len(diffs) > 0 {
		t.Logf("%d differences: template.yaml is the reference; bring infra/cdk (stack.go, spec.go) to it, "+
			"or change both sides together", len(diffs))
	}
}

// The comparison has to see what matters: a sanity check that the entities the issue names are
// there on both sides (a comparison of two empty fact sets would pass).
func TestParityCoversTheSystem(t *testing.T) {
	ref, _ := factsOf(t, "template.yaml", samTemplateJSON(t))
	got, _ := factsOf(t, "cdk", cdkTemplateJSON(t))
	want := []string{
		"function WorkerFunction", "iam WorkerFunction", "queue IngestQueue", "queue IngestDLQ",
		"table LedgerTable", "table CrmTable", "bucket QuarantineBucket", "bucket policy QuarantineBucket",
		"alarm DlqNotEmptyAlarm", "route POST /crm/changes", "http api HttpApi", "topic AlarmTopic",
		"schedule ReconcileParityFunctionSchedule", "parameter Stage", "output HttpApiUrl",
	}
	for _, c := range connectors {
		want = append(want, "function "+c.FunctionID(), "iam "+c.FunctionID(), "secret "+c.SecretID(),
			"route POST /webhooks/"+c.Source)
	}
	for _, f := range []facts{ref, got} {
		for _, e := range want {
			if len(f[e]) == 0 {
				t.Errorf("no facts for %q", e)
			}
		}
		if !strings.HasPrefix(f["event source mapping WorkerFunction <- ${IngestQueue.Arn}"]["BatchSize"], "1") {
			t.Errorf("the worker's event source mapping is not compared: %v", f["event source mapping WorkerFunction <- ${IngestQueue.Arn}"])
		}
	}
}

// Editing one alarm threshold or one queue attribute on only one side fails the comparison, and the
// failure names the property.
func TestParityCatchesOneSidedEdits(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	baseline := map[string]bool{}
	for _, d := range parityDiffs(t, samTemplateJSON(t), cdkTemplateJSON(t)) {
		baseline[d] = true
	}
	newDiffs := func(sam, cdk map[string]any) []string {
		var out []string
		for _, d := range parityDiffs(t, sam, cdk) {
			if !baseline[d] {
				out = append(out, d)
			}
		}
		return out
	}
	bump := func(old string) string {
		n, err := strconv.Atoi(old)
		if err != nil {
			t.Fatalf("not a number: %q", old)
		}
		return strconv.Itoa(n + 1)
	}

	yamlEdits := []struct {
		name, resource, prop, kind string
	}{
		{"alarm threshold in template.yaml", "DlqNotEmptyAlarm", "Threshold", "alarm"},
		{"queue attribute in template.yaml", "IngestQueue", "VisibilityTimeout", "queue"},
	}
	for _, e := range yamlEdits {
		t.Run(e.name, func(t *testing.T) {
			mutated, old, err := setYAMLProperty(src, e.resource, e.prop, bump)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := samTranslate(mutated)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%s %s: %s: template.yaml %s, cdk %s", e.kind, e.resource, e.prop, bump(old), old)
			got := newDiffs(decode(t, raw), cdkTemplateJSON(t))
			if len(got) != 1 || got[0] != want {
				t.Errorf("after editing %s.%s in a copy of template.yaml: got differences %q, want exactly %q", e.resource, e.prop, got, want)
			}
		})
	}

	cdkEdits := []struct {
		name, resource, prop, kind, value string
	}{
		{"alarm threshold in the CDK template", "DlqNotEmptyAlarm", "Threshold", "alarm", "7"},
		{"queue attribute in the CDK template", "IngestQueue", "FifoThroughputLimit", "queue", "perQueue"},
	}
	for _, e := range cdkEdits {
		t.Run(e.name, func(t *testing.T) {
			cdk := cdkTemplateJSON(t)
			p := cdkResourceProps(t, cdk, e.resource)
			old := fmt.Sprint(p[e.prop])
			if _, err := strconv.ParseFloat(e.value, 64); err == nil {
				p[e.prop], _ = strconv.ParseFloat(e.value, 64)
			} else {
				p[e.prop] = e.value
			}
			want := fmt.Sprintf("%s %s: %s: template.yaml %s, cdk %s", e.kind, e.resource, e.prop, old, e.value)
			got := newDiffs(samTemplateJSON(t), cdk)
			if len(got) != 1 || got[0] != want {
				t.Errorf("after editing %s.%s in the CDK template: got differences %q, want exactly %q", e.resource, e.prop, got, want)
			}
		})
	}
}

func cdkResourceProps(t *testing.T, cdk map[string]any, identity string) map[string]any {
	t.Helper()
	for _, r := range cdk["Resources"].(map[string]any) {
		rm := r.(map[string]any)
		md, _ := rm["Metadata"].(map[string]any)
		if md["aws:cdk:path"] == cdkStackPrefix+identity+"/Resource" {
			return rm["Properties"].(map[string]any)
		}
	}
	t.Fatalf("no CDK resource at %s%s/Resource", cdkStackPrefix, identity)
	return nil
}

// setYAMLProperty rewrites the first "<prop>: value" line inside the top-level resource block
// "  <resource>:" of a template, returning the new text and the old value.
func setYAMLProperty(src []byte, resource, prop string, newValue func(old string) string) ([]byte, string, error) {
	lines := strings.Split(string(src), "\n")
	start := -1
	for i, l := range lines {
		if l == "  "+resource+":" {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, "", fmt.Errorf("template.yaml has no resource %s", resource)
	}
	propRE := regexp.MustCompile(`^(\s+` + regexp.QuoteMeta(prop) + `:\s*)([^\s#]+)(.*)$`)
	for i := start + 1; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "  ") && len(l) > 2 && l[2] != ' ' && l[2] != '#' {
			break // next resource
		}
		if !strings.HasPrefix(l, "  ") && strings.TrimSpace(l) != "" {
			break // next section
		}
		if m := propRE.FindStringSubmatch(l); m != nil {
			old := strings.Trim(m[2], `"'`)
			lines[i] = m[1] + newValue(old) + m[3]
			return []byte(strings.Join(lines, "\n")), old, nil
		}
	}
	return nil, "", fmt.Errorf("resource %s has no %s line", resource, prop)
}

func TestSynthRefusesWithoutDist(t *testing.T) {
	dir := t.TempDir()
	if err := checkDist(dir); err == nil || !strings.Contains(err.Error(), "run `make dist`") {
		t.Errorf("checkDist(empty dir) = %v, want an error naming `make dist`", err)
	}
	for _, id := range FunctionIDs() {
		if id == "WorkerFunction" {
			continue
		}
		os.MkdirAll(filepath.Join(dir, id), 0o755)
		os.WriteFile(filepath.Join(dir, id, "bootstrap"), nil, 0o755)
	}
	if err := checkDist(dir); err == nil || !strings.Contains(err.Error(), "lacks WorkerFunction/bootstrap: run `make dist`") {
		t.Errorf("checkDist(dist without the worker) = %v, want an error naming WorkerFunction/bootstrap and `make dist`", err)
	}
}

// Every function `make dist` builds is a function of the app, and the other way round.
func TestFunctionsMatchMakeDist(t *testing.T) {
	out, err := exec.Command("make", "-s", "-C", repoRoot, "--no-print-directory", "print-functions").Output()
	if err != nil {
		t.Fatalf("make print-functions: %v", err)
	}
	got, want := strings.Fields(string(out)), FunctionIDs()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Makefile FUNCTIONS = %v, the CDK app's FunctionIDs() = %v", got, FunctionIDs())
	}
}
