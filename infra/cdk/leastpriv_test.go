package main

// Least privilege, asserted on both templates (template.yaml after the SAM transform, and the CDK
// app's): each function's role may do only what the function is for.
//
//   - every function: its own role; no "*" in an action, no NotAction/NotResource, no Resource "*"
//     in its own statements (every resource is one of the stack's); no managed policy but
//     AWSLambdaBasicExecutionRole (and no *FullAccess); Secrets Manager only on the secrets its
//     environment names; inline CloudWatch Logs only on its own log group;
//   - DynamoDB: only the actions the function's binary calls (read from its Go source: the packages
//     `make dist` links into that binary), and it has each of them;
//   - webhook functions: read their own secret, send to the ingest queue, write their quarantine
//     prefix, and nothing else (Mailgun also records replay tokens);
//   - the worker: consumes the ingest queue (the four actions its event source mapping needs, on
//     that queue), reads and writes the ledger and CRM tables, reads the two hydration secrets, and
//     writes its own log group; no managed policy at all;
//   - reconcile: the tables, the queue depths, sending to the ingest queue, listing the quarantine.
//   - Graph subscriptions: its own state table (Scan, Get, Put, Update), the ledger read by key and
//     through ByGroup only, sending to the ingest queue, and the msgraph secret.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const basicExecution = "service-role/AWSLambdaBasicExecutionRole"

func TestLeastPrivilege(t *testing.T) {
	for _, side := range []struct {
		name string
		raw  func(*testing.T) map[string]any
	}{{"template.yaml", samTemplateJSON}, {"cdk", cdkTemplateJSON}} {
		t.Run(side.name, func(t *testing.T) {
			tpl, err := newTemplate(side.name, side.raw(t))
			if err != nil {
				t.Fatal(err)
			}
			iams, problems := tpl.functionIAM(map[string]bool{})
			for _, p := range problems {
				t.Error(p)
			}
			if len(iams) == 0 {
				t.Fatal("no function roles found")
			}
			for _, fn := range sortedKeys(iams) {
				for _, p := range leastPrivilegeProblems(t, tpl, fn, iams[fn]) {
					t.Errorf("%s: %s", fn, p)
				}
			}
		})
	}
}

// fnEnv is a function's environment, rendered.
func fnEnv(tpl *template, fn string) map[string]string {
	env := map[string]string{}
	e, _ := tpl.props(tpl.byIdent[fn])["Environment"].(map[string]any)
	vars, _ := e["Variables"].(map[string]any)
	for k, v := range vars {
		env[k] = tpl.render(v)
	}
	return env
}

// arnOf turns a Ref rendering ("${IngestQueue}") into the Arn attribute ("${IngestQueue.Arn}").
func arnOf(ref string) string {
	if strings.HasPrefix(ref, "${") && strings.HasSuffix(ref, "}") && !strings.Contains(ref, ".") {
		return strings.TrimSuffix(ref, "}") + ".Arn}"
	}
	return "(no resource: " + ref + ")"
}

// grants: action -> allowed resources; a statement outside it is a problem.
type grants map[string][]string

func (g grants) add(resources []string, actions ...string) {
	for _, a := range actions {
		g[a] = append(g[a], resources...)
	}
}

// allows: the statement's resource is an allowed one, or narrower than an allowed ".../*" pattern
// (a table's "/index/*" covers "/index/ByGroup").
func (g grants) allows(s stmt) bool {
	for _, r := range g[s.Action] {
		if r == s.Resource || strings.HasSuffix(r, "/*") && strings.HasPrefix(s.Resource, strings.TrimSuffix(r, "*")) {
			return true
		}
	}
	return false
}

func leastPrivilegeProblems(t *testing.T, tpl *template, fn string, iam *fnIAM) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	env := fnEnv(tpl, fn)

	// ---- every function
	if iam.AssumedBy != "Service:lambda.amazonaws.com sts:AssumeRole" {
		bad("role %s is assumed by %q, want only lambda.amazonaws.com", iam.Role, iam.AssumedBy)
	}
	for _, m := range iam.Managed {
		switch {
		case strings.Contains(m, "FullAccess"):
			bad("managed policy %s: no *FullAccess policy", m)
		case m != basicExecution:
			bad("managed policy %s: only %s is accepted (README: Least privilege)", m, basicExecution)
		}
	}
	var secrets []string
	for k, v := range env {
		if strings.HasSuffix(k, "SECRET_ID") {
			secrets = append(secrets, v)
		}
	}
	logGroup := ownLogGroupArn(tpl, fn)
	used := dynamoActionsUsed(t, fn)
	for _, s := range iam.Statements {
		switch {
		case s.Not != "":
			bad("statement with %s (%s %s): name actions and resources", s.Not, s.Action, s.Resource)
		case strings.Contains(s.Action, "*"):
			bad("action %s on %s: no wildcard actions", s.Action, s.Resource)
		case s.Resource == "*" || !strings.HasPrefix(s.Resource, "${"):
			bad("%s on %s: every resource must be one of the stack's", s.Action, s.Resource)
		}
		if s.Effect != "Allow" {
			continue
		}
		service, action, _ := strings.Cut(s.Action, ":")
		switch service {
		case "secretsmanager":
			if action != "GetSecretValue" || !contains(secrets, s.Resource) {
				bad("%s on %s: only GetSecretValue, on the secrets its environment names %v", s.Action, s.Resource, secrets)
			}
		case "logs":
			if s.Resource != logGroup {
				bad("%s on %s: CloudWatch Logs only on its own log group %s", s.Action, s.Resource, logGroup)
			}
		case "dynamodb":
			if !used[s.Action] {
				bad("%s on %s: its binary never calls it (DynamoDB calls in its Go packages: %v)", s.Action, s.Resource, sortedKeys(used))
			}
		}
	}

	// ---- by kind of function
	g := grants{}
	for _, sec := range secrets {
		g.add([]string{sec}, "secretsmanager:GetSecretValue")
	}
	if logGroup != "" {
		g.add([]string{logGroup}, "logs:CreateLogStream", "logs:PutLogEvents")
	}
	tables := func(keys ...string) []string {
		var out []string
		for _, k := range keys {
			if v, ok := env[k]; ok {
				out = append(out, arnOf(v), strings.TrimSuffix(arnOf(v), "}")+"}/index/*")
			}
		}
		return out
	}
	var required []stmt
	switch {
	case env["CONNECTOR"] != "": // webhook
		queue, bucket := arnOf(env["INGEST_QUEUE_URL"]), arnOf(env["QUARANTINE_BUCKET"])
		prefix := bucket + "/quarantine/" + env["CONNECTOR"] + "/*"
		g.add([]string{queue}, "sqs:SendMessage")
		g.add([]string{prefix}, "s3:PutObject")
		if r, ok := env["REPLAY_TABLE"]; ok {
			g.add([]string{arnOf(r)}, "dynamodb:PutItem")
		}
		required = append(required, stmt{Action: "secretsmanager:GetSecretValue", Resource: env["SECRET_ID"]},
			stmt{Action: "sqs:SendMessage", Resource: queue}, stmt{Action: "s3:PutObject", Resource: prefix})
		if len(iam.Managed) != 1 && logGroup == "" {
			bad("no CloudWatch Logs permissions")
		}
	case fn == "WorkerFunction":
		consume := []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
		sources := esmSources(tpl, fn)
		if len(sources) != 1 {
			bad("want one event source mapping, got %v", sources)
		}
		g.add(sources, consume...)
		for _, src := range sources {
			for _, a := range consume {
				required = append(required, stmt{Action: a, Resource: src})
			}
		}
		g.add(tables("LEDGER_TABLE", "CRM_TABLE"), sortedKeys(used)...)
		if len(iam.Managed) != 0 {
			bad("managed policies %v: the worker has an explicit role, logs scoped to its log group", iam.Managed)
		}
		if logGroup == "" {
			bad("no log group /aws/lambda/<function> declared")
		}
		required = append(required, stmt{Action: "logs:PutLogEvents", Resource: logGroup})
		// Every DynamoDB call the worker's binary makes must be allowed on both tables: IAM is the
		// one thing the local stack does not check, and a call the role lacks (a read-ahead
		// BatchGetItem, say) would fail every event in AWS.
		for _, action := range sortedKeys(used) {
			for _, table := range []string{"LEDGER_TABLE", "CRM_TABLE"} {
				required = append(required, stmt{Action: action, Resource: arnOf(env[table])})
			}
		}
	case env["JOB"] != "": // reconcile
		queue, dlq := arnOf(env["INGEST_QUEUE_URL"]), arnOf(env["DLQ_URL"])
		g.add(tables("LEDGER_TABLE", "CRM_TABLE"), sortedKeys(used)...)
		g.add([]string{queue}, "sqs:SendMessage", "sqs:GetQueueAttributes")
		g.add([]string{dlq}, "sqs:GetQueueAttributes")
		g.add([]string{arnOf(env["QUARANTINE_BUCKET"])}, "s3:ListBucket")
	case fn == "CrmChangesFunction":
		queue, crm := arnOf(env["INGEST_QUEUE_URL"]), arnOf(env["CRM_TABLE"])
		g.add([]string{queue}, "sqs:SendMessage")
		g.add([]string{crm}, "dynamodb:GetItem") // identity items only (a LeadingKeys condition)
		required = append(required, stmt{Action: "sqs:SendMessage", Resource: queue}, stmt{Action: "dynamodb:GetItem", Resource: crm})
	case fn == "GraphSubscriptionsFunction":
		state, ledger, queue := arnOf(env["SUBSCRIPTION_TABLE"]), arnOf(env["LEDGER_TABLE"]), arnOf(env["INGEST_QUEUE_URL"])
		byGroup := strings.TrimSuffix(ledger, "}") + "}/index/ByGroup"
		g.add([]string{state}, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Scan")
		g.add([]string{ledger}, "dynamodb:GetItem")
		g.add([]string{byGroup}, "dynamodb:Query")
		g.add([]string{queue}, "sqs:SendMessage")
		required = append(required, stmt{Action: "secretsmanager:GetSecretValue", Resource: env["MSGRAPH_SECRET_ID"]},
			stmt{Action: "dynamodb:UpdateItem", Resource: state}, stmt{Action: "dynamodb:Query", Resource: byGroup},
			stmt{Action: "sqs:SendMessage", Resource: queue})
	default:
		bad("no least-privilege rule for this function: add one to leastpriv_test.go")
	}
	for _, s := range iam.Statements {
		if s.Effect != "Allow" || g.allows(s) {
			continue
		}
		if strings.HasPrefix(s.Action, "dynamodb:") && !used[s.Action] {
			continue // reported above
		}
		bad("%s on %s: not something this function is for", s.Action, s.Resource)
	}
	for _, r := range required {
		found := false
		for _, s := range iam.Statements {
			if s.Effect == "Allow" && s.Action == r.Action && s.Resource == r.Resource {
				found = true
			}
		}
		if !found {
			bad("missing %s on %s, which it needs", r.Action, r.Resource)
		}
	}
	return problems
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// ownLogGroupArn is "${L.Arn}" for the log group named /aws/lambda/${fn}, or "".
func ownLogGroupArn(tpl *template, fn string) string {
	for _, id := range tpl.idsOfType("AWS::Logs::LogGroup") {
		if tpl.render(tpl.props(id)["LogGroupName"]) == "/aws/lambda/${"+fn+"}" {
			return "${" + tpl.ident[id] + ".Arn}"
		}
	}
	return ""
}

func esmSources(tpl *template, fn string) []string {
	var out []string
	for _, id := range tpl.idsOfType("AWS::Lambda::EventSourceMapping") {
		p := tpl.props(id)
		if tpl.refTarget(p["FunctionName"]) == fn {
			out = append(out, tpl.render(p["EventSourceArn"]))
		}
	}
	return out
}

// ---------------------------------------------------------------------------- DynamoDB calls in Go

var (
	dynamoMu    sync.Mutex
	dynamoCache = map[string]map[string]bool{} // package -> actions
)

// dynamoClientOps: DynamoDB client methods that are IAM actions of the same name.
var dynamoClientOps = map[string]bool{
	"GetItem": true, "PutItem": true, "UpdateItem": true, "DeleteItem": true, "Query": true, "Scan": true,
	"BatchGetItem": true, "BatchWriteItem": true, "DescribeTable": true, "ExecuteStatement": true,
}

// transactItemActions: a transaction is authorized per item, by the item's action.
var transactItemActions = map[string]map[string]string{
	"TransactWriteItem": {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"},
	"TransactGetItem":   {"Get": "GetItem"},
}

// dynamoActionsUsed returns the DynamoDB IAM actions the function's binary can call: every call in
// the repository's packages linked into it (`go list -deps` of the package `make dist` builds it
// from). Package granularity over-approximates; it never misses a call.
func dynamoActionsUsed(t *testing.T, fn string) map[string]bool {
	t.Helper()
	pkg := functionPackage(t, fn)
	dynamoMu.Lock()
	defer dynamoMu.Unlock()
	if a, ok := dynamoCache[pkg]; ok {
		return a
	}
	cmd := exec.Command("go", "list", "-deps", "-tags", "lambda.norpc",
		"-f", `{{if .Module}}{{if eq .Module.Path "github.com/crmsync/crmsync"}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{end}}{{end}}`, pkg)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	actions := map[string]bool{}
	fset := token.NewFileSet()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, name := range fields[1:] {
			f, err := parser.ParseFile(fset, filepath.Join(fields[0], name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.CallExpr:
					sel, ok := x.Fun.(*ast.SelectorExpr)
					if !ok {
						return true
					}
					switch {
					case dynamoClientOps[sel.Sel.Name] && len(x.Args) >= 2: // client.Op(ctx, input, ...)
						actions["dynamodb:"+sel.Sel.Name] = true
					case sel.Sel.Name == "NewQueryPaginator":
						actions["dynamodb:Query"] = true
					case sel.Sel.Name == "NewScanPaginator":
						actions["dynamodb:Scan"] = true
					}
				case *ast.CompositeLit:
					sel, ok := x.Type.(*ast.SelectorExpr)
					if !ok || transactItemActions[sel.Sel.Name] == nil {
						return true
					}
					for _, e := range x.Elts {
						if kv, ok := e.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok && transactItemActions[sel.Sel.Name][k.Name] != "" {
								actions["dynamodb:"+transactItemActions[sel.Sel.Name][k.Name]] = true
							}
						}
					}
				}
				return true
			})
		}
	}
	dynamoCache[pkg] = actions
	return actions
}

// functionPackage asks the Makefile (the one place that maps them) which package a function's
// bootstrap is built from.
func functionPackage(t *testing.T, fn string) string {
	t.Helper()
	out, err := exec.Command("make", "-s", "-C", repoRoot, "--no-print-directory", "print-pkg-"+fn).Output()
	if err != nil {
		t.Fatalf("make print-pkg-%s: %v", fn, err)
	}
	pkg := strings.TrimSpace(string(out))
	if pkg == "" {
		t.Fatalf("the Makefile builds no package for %s", fn)
	}
	return pkg
}

// The least-privilege checks are not vacuous: grants a function must not have are reported.
func TestLeastPrivilegeCatchesViolations(t *testing.T) {
	raw := samTemplateJSON(t)
	res := raw["Resources"].(map[string]any)
	addStatement := func(role string, s map[string]any) {
		p := res[role].(map[string]any)["Properties"].(map[string]any)
		pol := p["Policies"].([]any)[0].(map[string]any)["PolicyDocument"].(map[string]any)
		pol["Statement"] = append(pol["Statement"].([]any), s)
	}
	addStatement("WebhookTwilioFunctionRole", map[string]any{"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
	addStatement("WebhookTwilioFunctionRole", map[string]any{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
		"Resource": map[string]any{"Ref": "CalendlySecret"}})
	addStatement("WebhookTwilioFunctionRole", map[string]any{"Effect": "Allow", "Action": "s3:PutObject",
		"Resource": map[string]any{"Fn::Sub": "${QuarantineBucket.Arn}/quarantine/calendly/*"}})
	addStatement("WorkerFunctionRole", map[string]any{"Effect": "Allow", "Action": "dynamodb:Scan",
		"Resource": map[string]any{"Fn::GetAtt": []any{"LedgerTable", "Arn"}}})
	addStatement("CrmChangesFunctionRole", map[string]any{"Effect": "Allow", "Action": "sqs:SendMessage",
		"Resource": map[string]any{"Fn::GetAtt": []any{"IngestDLQ", "Arn"}}})
	twilio := res["WebhookTwilioFunctionRole"].(map[string]any)["Properties"].(map[string]any)
	twilio["ManagedPolicyArns"] = append(twilio["ManagedPolicyArns"].([]any), "arn:aws:iam::aws:policy/AmazonS3FullAccess")

	tpl, err := newTemplate("template.yaml", raw)
	if err != nil {
		t.Fatal(err)
	}
	iams, _ := tpl.functionIAM(map[string]bool{})
	var got []string
	for _, fn := range sortedKeys(iams) {
		for _, p := range leastPrivilegeProblems(t, tpl, fn, iams[fn]) {
			got = append(got, fn+": "+p)
		}
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"WebhookTwilioFunction: action s3:* on *: no wildcard actions",
		"WebhookTwilioFunction: managed policy AmazonS3FullAccess: no *FullAccess policy",
		"WebhookTwilioFunction: secretsmanager:GetSecretValue on ${CalendlySecret}: only GetSecretValue, on the secrets its environment names",
		"WebhookTwilioFunction: s3:PutObject on ${QuarantineBucket.Arn}/quarantine/calendly/*: not something this function is for",
		"WorkerFunction: dynamodb:Scan on ${LedgerTable.Arn}: its binary never calls it",
		"CrmChangesFunction: sqs:SendMessage on ${IngestDLQ.Arn}: not something this function is for",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no problem reported like %q; reported:\n%s", want, all)
		}
	}
}
