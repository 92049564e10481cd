package localcloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// FunctionEnv is what a function's handler is built from locally: the environment the template
// gives it, an AWS configuration pointing at the local endpoint, its logger and its stdout (where
// its EMF metrics go).
type FunctionEnv struct {
	Getenv func(string) string
	AWS    aws.Config
	Log    *slog.Logger
	Stdout io.Writer
}

// Factory builds a function's handler from its environment, as the function's main does in
// Lambda.
type Factory func(ctx context.Context, fn samtemplate.Function, env FunctionEnv) (lambda.Handler, error)

// Config configures a local stack.
type Config struct {
	TemplatePath   string // template.yaml
	Endpoint       string // AWS endpoint (moto); started when nothing answers there
	HTTPAddr       string // where the HTTP API is served, e.g. 127.0.0.1:3000
	PublicBaseURL  string // what vendors would call; default http://<HTTPAddr>
	DevSecretsPath string // config/dev-secrets.json
	FixturesDir    string // vendor fake fixtures (events/vendor)
	StackName      string
	Factory        Factory
	Out            io.Writer // logs; default stdout
	// PollWait is the event source mapping's long-poll wait in seconds (default 1).
	PollWait int32
	// Pollers is the number of concurrent pollers per event source mapping (default 2).
	Pollers int
	// QueueAttributes override queues' template attributes, by logical id, at provisioning:
	// before the event source mappings' first long polls, which take the visibility timeout the
	// queue has when they start.
	QueueAttributes map[string]map[string]string
	// NoSchedules disables the schedule timers (rules can still be fired on demand).
	NoSchedules bool
	// NoEventSources leaves queues unpolled (tests that inspect what was enqueued).
	NoEventSources bool
	// Getenv reads overrides (CRMSYNC_<VAR> for vendor base URLs); default os.Getenv.
	Getenv func(string) string
	// FunctionEndpoint is the AWS endpoint the functions' clients use (default Endpoint), e.g. a
	// fault-injecting proxy in front of it; provisioning and the event source mappings keep
	// using Endpoint.
	FunctionEndpoint string
	// SerializeDynamoDB puts moto.Serializer between the functions and the endpoint when no
	// FunctionEndpoint is given: moto's transactions are not isolated under concurrent requests,
	// and the worker's pollers run concurrently (see moto.Serializer). crmsync-dev dev sets it.
	SerializeDynamoDB bool
	// AWSOptions are appended to the stack's aws.Config.APIOptions, so they reach provisioning,
	// every function's clients and the event source mappings' pollers (e.g. `crmsync-dev bench`'s
	// request counter).
	AWSOptions []func(*middleware.Stack) error
	// Alarms tunes the local evaluation of template.yaml's alarms (see AlarmMonitor).
	Alarms AlarmOptions
	// CrmRolesPath is the dev-only roles file the CRM changes function authorizes with
	// (CRM_ROLES_PATH): which local principals (LocalPrincipal) may act in which CRM roles.
	// Default: dev-crm-roles.yaml beside DevSecretsPath.
	CrmRolesPath string
}

// Dev is a running local stack.
type Dev struct {
	Stack     *Stack
	Runtime   *Runtime
	Scheduler *Scheduler
	Fakes     *VendorFakes
	Alarms    *AlarmMonitor // nil when local alarm evaluation is disabled
	AWS       aws.Config
	Addr      string // the HTTP API's listening address
	Endpoint  string
	Log       *slog.Logger
	// Logs keeps each function's latest log records (GET /_local/logs).
	Logs Logs

	moto       *moto.Server
	serializer *moto.Serializer
	srv        *http.Server
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeMu    sync.Once
	mappings   []*EventSourceMapping
}

// Start brings up the local stack and returns once it serves; Close stops it.
func Start(ctx context.Context, cfg Config) (d *Dev, err error) {
	cfg = cfg.withDefaults()
	if cfg.Factory == nil {
		return nil, errors.New("local stack: no function factory")
	}
	log := newStackLogger(cfg.Out)
	d = &Dev{Log: log, Endpoint: cfg.Endpoint}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if err = d.startOrFindMoto(ctx, cfg.Endpoint); err != nil {
		return nil, err
	}
	template, err := samtemplate.Load(cfg.TemplatePath, samtemplate.Options{StackName: cfg.StackName, AccountID: AccountID})
	if err != nil {
		return nil, err
	}
	functionAWS, err := d.loadAWSConfigs(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	if err = d.provision(ctx, cfg, template); err != nil {
		return nil, err
	}
	if err = d.setUpAlarmMonitor(ctx, cfg); err != nil {
		return nil, err
	}
	listener, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("serve HTTP API on %s: %w", cfg.HTTPAddr, err)
	}
	d.Addr = listener.Addr().String()
	d.Fakes = &VendorFakes{Dir: cfg.FixturesDir}
	d.Runtime = NewRuntime(log)
	invoker := d.Alarms.Invoker(d.Runtime) // AWS/Lambda metrics for the local alarms
	routes, rules, err := d.registerFunctions(ctx, cfg, functionAWS, invoker)
	if err != nil {
		listener.Close()
		return nil, err
	}
	d.serve(cfg, listener, invoker, routes, rules)
	return d, nil
}

// withDefaults fills in the configuration's defaults and serialises its log output.
func (cfg Config) withDefaults() Config {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	cfg.Out = &syncWriter{w: cfg.Out}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = awsclient.DefaultLocalEndpoint
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:3000"
	}
	if cfg.PollWait == 0 {
		cfg.PollWait = 1
	}
	if cfg.Pollers <= 0 {
		cfg.Pollers = 2
	}
	if cfg.CrmRolesPath == "" && cfg.DevSecretsPath != "" {
		cfg.CrmRolesPath = filepath.Join(filepath.Dir(cfg.DevSecretsPath), "dev-crm-roles.yaml")
	}
	return cfg
}

// newStackLogger is the local stack's own JSON logger (not a function's).
func newStackLogger(out io.Writer) *slog.Logger {
	handler := slog.NewJSONHandler(out, &slog.HandlerOptions{ReplaceAttr: lambdacontext.ReplaceAttr})
	return slog.New(handler).With("component", "crmsync-local")
}

// startOrFindMoto starts moto_server at endpoint unless something already answers there.
func (d *Dev) startOrFindMoto(ctx context.Context, endpoint string) error {
	server, err := moto.Ensure(ctx, endpoint)
	d.moto = server
	if err != nil {
		return err
	}
	if d.moto != nil {
		d.Log.Info("started moto_server", "endpoint", endpoint)
	} else {
		d.Log.Info("using running AWS endpoint", "endpoint", endpoint)
	}
	return nil
}

// loadAWSConfigs loads the stack's AWS configuration (d.AWS, for provisioning and the event
// source mappings) and returns the functions' one. When the functions' DynamoDB traffic is to
// be serialised, it starts the serializer; it sets cfg.FunctionEndpoint to the endpoint the
// functions use.
func (d *Dev) loadAWSConfigs(ctx context.Context, cfg *Config) (aws.Config, error) {
	var err error
	if d.AWS, err = awsclient.Load(ctx, cfg.Endpoint); err != nil {
		return aws.Config{}, err
	}
	d.AWS.APIOptions = append(d.AWS.APIOptions, cfg.AWSOptions...)
	functionAWS := d.AWS
	if cfg.FunctionEndpoint == "" && cfg.SerializeDynamoDB {
		if d.serializer, err = moto.Serialize(cfg.Endpoint); err != nil {
			return aws.Config{}, err
		}
		cfg.FunctionEndpoint = d.serializer.URL
	}
	if cfg.FunctionEndpoint == "" {
		cfg.FunctionEndpoint = cfg.Endpoint
		return functionAWS, nil
	}
	if functionAWS, err = awsclient.Load(ctx, cfg.FunctionEndpoint); err != nil {
		return aws.Config{}, err
	}
	functionAWS.APIOptions = append(functionAWS.APIOptions, cfg.AWSOptions...)
	return functionAWS, nil
}

// provision creates the template's resources (with the dev secrets, if any) and logs them.
func (d *Dev) provision(ctx context.Context, cfg Config, template *samtemplate.Template) error {
	var secrets map[string]json.RawMessage
	if cfg.DevSecretsPath != "" {
		var err error
		if secrets, err = LoadDevSecrets(cfg.DevSecretsPath); err != nil {
			return err
		}
	}
	stack, err := Provision(ctx, d.AWS, template, ProvisionOptions{StackName: cfg.StackName, DevSecrets: secrets, QueueAttributes: cfg.QueueAttributes})
	d.Stack = stack
	if err != nil {
		return err
	}
	for _, line := range d.Stack.Summary() {
		d.Log.Info("provisioned", "resource", line)
	}
	return nil
}

// setUpAlarmMonitor builds the local evaluation of the template's alarms, unless disabled.
func (d *Dev) setUpAlarmMonitor(ctx context.Context, cfg Config) error {
	if cfg.Alarms.Disabled {
		return nil
	}
	alarmAWS, err := awsclient.Load(ctx, cfg.Endpoint) // its own clients: its sampling is not the functions' traffic
	if err != nil {
		return err
	}
	monitor, err := NewAlarmMonitor(ctx, d.Stack, alarmAWS, d.Log, cfg.Alarms)
	d.Alarms = monitor
	if err != nil {
		return fmt.Errorf("alarms: %w", err)
	}
	return nil
}

// registerFunctions builds every function's environment and handler, in logical id order,
// registers it with the runtime and collects its HTTP routes, enabled schedules and event
// source mappings.
func (d *Dev) registerFunctions(ctx context.Context, cfg Config, functionAWS aws.Config, invoker Invoker) ([]APIRoute, []ScheduledRule, error) {
	var routes []APIRoute
	var rules []ScheduledRule
	ids := make([]string, 0, len(d.Stack.Functions))
	for id := range d.Stack.Functions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fn := d.Stack.Functions[id]
		fn.Env = d.functionEnvironment(cfg, id, fn)
		d.Stack.Functions[id] = fn
		if err := d.registerFunction(ctx, cfg, functionAWS, id, fn); err != nil {
			return nil, nil, err
		}
		for _, r := range fn.Routes {
			routes = append(routes, APIRoute{Method: r.Method, Path: r.Path, Function: id, Authorizer: r.Authorizer})
		}
		functionRules, err := scheduledRules(id, fn)
		if err != nil {
			return nil, nil, err
		}
		rules = append(rules, functionRules...)
		if err := d.addEventSourceMappings(cfg, invoker, id, fn); err != nil {
			return nil, nil, err
		}
	}
	return routes, rules, nil
}

// functionEnvironment is the environment a function runs with locally: the template's, with
// PUBLIC_BASE_URL pointing at the local HTTP API, vendor base URLs at the vendor fakes (or at
// CRMSYNC_<VAR> when set), and the Lambda runtime's variables.
func (d *Dev) functionEnvironment(cfg Config, id string, fn samtemplate.Function) map[string]string {
	public := cfg.PublicBaseURL
	if public == "" {
		public = "http://" + d.Addr
	}
	fakeBase := "http://" + d.Addr + "/_vendor/"
	env := map[string]string{}
	for k, v := range fn.Env {
		env[k] = v
	}
	if env["PUBLIC_BASE_URL"] == "" && hasKey(fn.Env, "PUBLIC_BASE_URL") {
		env["PUBLIC_BASE_URL"] = public
	}
	for k := range fn.Env {
		if prefix, ok := BaseURLEnv[k]; ok {
			if real := cfg.Getenv("CRMSYNC_" + k); real != "" {
				env[k] = real
			} else {
				env[k] = fakeBase + prefix
			}
		}
	}
	env["AWS_REGION"] = d.AWS.Region
	env["AWS_LAMBDA_FUNCTION_NAME"] = d.Stack.Physical[id].Ref
	env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = strconv.Itoa(fn.MemorySize)
	env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
	env[awsclient.EndpointEnv] = cfg.FunctionEndpoint
	if cfg.CrmRolesPath != "" {
		env["CRM_ROLES_PATH"] = cfg.CrmRolesPath
	}
	return env
}

// registerFunction builds the function's handler from its environment (fn.Env) and registers
// it, with the factory that rebuilds it, with the runtime.
func (d *Dev) registerFunction(ctx context.Context, cfg Config, functionAWS aws.Config, id string, fn samtemplate.Function) error {
	env := fn.Env
	functionEnv := FunctionEnv{Getenv: func(k string) string { return env[k] }, AWS: functionAWS,
		Log:    slog.New(NewLogHandler(io.MultiWriter(cfg.Out, d.Logs.Writer(id)), id, slog.LevelInfo)),
		Stdout: d.Alarms.Writer(cfg.Out)}
	handler, err := cfg.Factory(ctx, fn, functionEnv)
	if err != nil {
		return fmt.Errorf("function %s: %w", id, err)
	}
	build := func() (lambda.Handler, error) { return cfg.Factory(ctx, fn, functionEnv) }
	d.Runtime.RegisterFactory(fn, d.Stack.Physical[id].Attrs["Arn"], handler, build)
	return nil
}

// scheduledRules is the function's enabled schedules as scheduler rules.
func scheduledRules(id string, fn samtemplate.Function) ([]ScheduledRule, error) {
	var rules []ScheduledRule
	for _, s := range fn.Schedules {
		if !s.Enabled {
			continue
		}
		expr, err := ParseSchedule(s.Expression)
		if err != nil {
			return nil, fmt.Errorf("function %s schedule %s: %w", id, s.Name, err)
		}
		rules = append(rules, ScheduledRule{Name: id + "-" + s.Name, Function: id, Expr: expr, Input: s.Input})
	}
	return rules, nil
}

// addEventSourceMappings adds cfg.Pollers event source mappings for each of the function's SQS
// event sources.
func (d *Dev) addEventSourceMappings(cfg Config, invoker Invoker, id string, fn samtemplate.Function) error {
	for _, src := range fn.SQS {
		url, err := queueURLForARN(d.Stack, src.Queue)
		if err != nil {
			return fmt.Errorf("function %s event %s: %w", id, src.Name, err)
		}
		for i := 0; i < cfg.Pollers; i++ {
			d.mappings = append(d.mappings, &EventSourceMapping{SQS: d.Alarms.ObserveQueue(sqs.NewFromConfig(d.AWS), url), Invoker: invoker,
				Function: id, QueueURL: url, QueueARN: src.Queue, Region: d.AWS.Region, BatchSize: src.BatchSize,
				ReportFail: src.ReportBatchItemFailed, WaitSeconds: cfg.PollWait, Log: d.Log})
		}
	}
	return nil
}

// serve starts the HTTP API (with the vendor fakes and the /_local endpoints) on listener, the
// event source mappings' pollers (unless cfg.NoEventSources), the alarm monitor and the
// schedule timers (unless cfg.NoSchedules), then logs the routes.
func (d *Dev) serve(cfg Config, listener net.Listener, invoker Invoker, routes []APIRoute, rules []ScheduledRule) {
	d.Scheduler = &Scheduler{Rules: rules, Invoker: invoker, Region: d.AWS.Region, Log: d.Log}
	mux := http.NewServeMux()
	mux.Handle("/_vendor/", http.StripPrefix("/_vendor", d.Fakes))
	mux.HandleFunc("POST /_local/schedules/{name}", d.runSchedule)
	mux.HandleFunc("GET /_local/stack", d.describe)
	mux.Handle("GET /_local/alarms", d.Alarms)
	mux.Handle("GET /_local/logs", &d.Logs)
	api := &HTTPAPI{Routes: routes, Invoker: invoker, Log: d.Log, Extra: mux}
	d.srv = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = d.srv.Serve(listener) }()
	for _, m := range d.mappings {
		if cfg.NoEventSources {
			break
		}
		d.wg.Add(1)
		go func(m *EventSourceMapping) { defer d.wg.Done(); m.Run(runCtx) }(m)
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.Alarms.Run(runCtx) }()
	if !cfg.NoSchedules {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.Scheduler.Run(runCtx) }()
	}
	for _, r := range routes {
		d.Log.Info("route", "route", r.Method+" http://"+d.Addr+r.Path, "function", r.Function)
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func queueURLForARN(st *Stack, arn string) (string, error) {
	for _, p := range st.Physical {
		if p.Attrs["Arn"] == arn && p.Attrs["QueueUrl"] != "" {
			return p.Attrs["QueueUrl"], nil
		}
	}
	return "", fmt.Errorf("no queue with ARN %q in the stack", arn)
}

// RunSchedule fires the rule (by rule name, function logical id or the job in its input) now.
func (d *Dev) RunSchedule(ctx context.Context, name string) ([]byte, error) {
	for _, r := range d.Scheduler.Rules {
		if r.Name == name || r.Function == name || strings.Contains(r.Input, `"`+name+`"`) {
			return d.Scheduler.Fire(ctx, r, time.Now())
		}
	}
	return nil, fmt.Errorf("no schedule named %q", name)
}

func (d *Dev) runSchedule(w http.ResponseWriter, r *http.Request) {
	out, err := d.RunSchedule(r.Context(), r.PathValue("name"))
	if err != nil {
		writeJSONMessage(w, http.StatusNotFound, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

func (d *Dev) describe(w http.ResponseWriter, _ *http.Request) {
	res := map[string]any{}
	for id, p := range d.Stack.Physical {
		res[id] = map[string]any{"type": d.Stack.Template.Resources[id].Type, "ref": p.Ref, "attrs": p.Attrs}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"stack": d.Stack.Name, "region": d.Stack.Region, "endpoint": d.Endpoint, "resources": res, "outputs": d.Stack.Outputs})
}

// Close stops serving, polling and scheduling, then stops moto if this stack started it.
func (d *Dev) Close() {
	d.closeMu.Do(func() {
		if d.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = d.srv.Shutdown(ctx)
			cancel()
		}
		if d.cancel != nil {
			d.cancel()
		}
		d.wg.Wait()
		if d.serializer != nil {
			d.serializer.Close()
		}
		if d.moto != nil {
			d.moto.Stop()
			d.Log.Info("stopped moto_server")
		}
	})
}

// syncWriter serialises writes so every function's log lines stay whole on one output.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write writes p to the underlying writer, one write at a time.
func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
