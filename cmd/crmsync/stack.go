package main

// Resource resolution shared by every command that talks to a running stack (contact, crm, and
// the ops commands: status, dlq, replay, ...). Commands call resolveStack(cmd) and use the
// stackRef; the flags are persistent on the root command:
//
//	--stack   CloudFormation stack name (default $CRMSYNC_STACK or "crmsync"); when neither is
//	          given and no AWS credentials are configured (environment or shared files; the
//	          instance metadata service is never asked), the local stack at the default address,
//	          or else the one line errNoStack
//	--region  AWS region (default from the AWS config chain; locally, the stack's own region)
//	--local   use the local stack (`crmsync-dev dev`); default when $CRMSYNC_AWS_ENDPOINT is set or
//	          --api points at a loopback address
//	--api     base URL of the HTTP API (default locally http://$CRMSYNC_HTTP_ADDR or
//	          http://127.0.0.1:3000; in AWS the stack's HttpApiUrl output)
//
// Locally the running dev stack describes itself at GET <api>/_local/stack; in AWS the stack is
// read with CloudFormation DescribeStacks (outputs) and ListStackResources (logical → physical).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/crmsync/crmsync/shared/awsclient"
)

// Persistent root flag names (read back by resolveStack).
const (
	flagStack  = "stack"
	flagRegion = "region"
	flagLocal  = "local"
	flagAPI    = "api"
)

// stackEnv names the environment variable with the default stack name.
const stackEnv = "CRMSYNC_STACK"

// defaultStackName is the stack name when neither --stack nor $CRMSYNC_STACK is given.
const defaultStackName = "crmsync"

// addStackFlags registers the stack-selection flags as persistent flags of the root command.
func addStackFlags(f *pflag.FlagSet) {
	f.String(flagStack, envOr(stackEnv, defaultStackName), "CloudFormation stack name ($"+stackEnv+"); with neither and no AWS credentials configured, the local stack")
	f.String(flagRegion, "", "AWS region (default from the AWS configuration; locally the stack's region)")
	f.Bool(flagLocal, false, "use the local stack served by 'crmsync-dev dev' (default when $"+awsclient.EndpointEnv+" is set or --api is a loopback URL)")
	f.String(flagAPI, "", "base URL of the stack's HTTP API (default locally http://$CRMSYNC_HTTP_ADDR or http://127.0.0.1:3000, in AWS the HttpApiUrl output)")
}

// stackResource is one resource of the stack: its physical id (what !Ref returns) and, for the
// local stack, its attributes (Arn, QueueUrl, QueueName, ...).
type stackResource struct {
	Type  string            `json:"type,omitempty"`
	Ref   string            `json:"ref"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// stackRef is a resolved stack: where its resources are and how to reach them.
type stackRef struct {
	Name     string // stack name
	Region   string
	Local    bool   // the local dev stack (moto) rather than AWS
	Endpoint string // AWS endpoint of the local stack ("" in AWS)
	APIBase  string // HTTP API base URL, no trailing slash

	LedgerTable      string
	CrmTable         string
	ReplayTable      string
	IngestQueueURL   string
	DLQURL           string
	QuarantineBucket string
	AlarmTopicArn    string

	// Resources maps every logical id to its physical resource; Outputs are the stack outputs.
	Resources map[string]stackResource
	Outputs   map[string]string

	// AWS is configured for the stack's region (and, locally, its endpoint and test credentials).
	AWS aws.Config
}

// Function returns the physical name of a function by logical id (e.g. "WorkerFunction").
func (s *stackRef) Function(logicalID string) (string, error) {
	r, ok := s.Resources[logicalID]
	if !ok || r.Ref == "" {
		return "", fmt.Errorf("stack %s has no resource %s", s.Name, logicalID)
	}
	return r.Ref, nil
}

// stackOptions are the parsed stack flags.
type stackOptions struct {
	stack, region, api string
	stackSet, local    bool
	// named: a stack was asked for, with --stack or $CRMSYNC_STACK.
	named bool
}

func stackOptionsFrom(cmd *cobra.Command) stackOptions {
	var o stackOptions
	str := func(name string) (string, bool) {
		if f := cmd.Flag(name); f != nil {
			return f.Value.String(), f.Changed
		}
		return "", false
	}
	o.stack, o.stackSet = str(flagStack)
	o.named = o.stackSet || os.Getenv(stackEnv) != ""
	if o.stack == "" {
		o.stack = envOr(stackEnv, defaultStackName)
	}
	o.region, _ = str(flagRegion)
	o.api, _ = str(flagAPI)
	o.api = strings.TrimRight(o.api, "/")
	local, localSet := str(flagLocal)
	switch {
	case localSet:
		o.local = local == "true"
	case os.Getenv(awsclient.EndpointEnv) != "":
		o.local = true
	case o.api != "":
		o.local = isLoopbackURL(o.api)
	}
	return o
}

// resolveStack resolves the stack selected by the command's (persistent) flags.
func resolveStack(cmd *cobra.Command) (*stackRef, error) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	o := stackOptionsFrom(cmd)
	if o.local {
		return resolveLocal(ctx, o, http.DefaultClient)
	}
	if !o.named && o.api == "" && !awsCredentialsConfigured(os.Getenv) {
		// A newcomer beside `make dev`: no stack named, no AWS credentials. Prefer the local
		// stack at its default address rather than an AWS credential chain that can only fail.
		probe, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if ref, err := resolveLocal(probe, o, http.DefaultClient); err == nil {
			return ref, nil
		}
		return nil, errNoStack
	}
	var opts []func(*config.LoadOptions) error
	if o.region != "" {
		opts = append(opts, config.WithRegion(o.region))
	}
	cfg, err := awsclient.Load(ctx, "", opts...)
	if err != nil {
		return nil, err
	}
	return resolveAWS(ctx, o, cfg, cloudformation.NewFromConfig(cfg))
}

// errNoStack is the one line said when no stack was named, no AWS credentials are configured and
// no local stack answers at the default address.
var errNoStack = errors.New("no stack found: start one with `make dev`, or name one with --stack (and configure AWS credentials)")

// awsCredentialsConfigured reports whether AWS credentials are configured for this process,
// judged from the environment and the shared config and credentials files only: it never asks
// the instance metadata service (which, off EC2, only fails slowly).
func awsCredentialsConfigured(getenv func(string) string) bool {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		if getenv(k) != "" {
			return true
		}
	}
	files := []string{getenv("AWS_SHARED_CREDENTIALS_FILE"), getenv("AWS_CONFIG_FILE")}
	if getenv("AWS_SHARED_CREDENTIALS_FILE") == "" || getenv("AWS_CONFIG_FILE") == "" {
		if home, err := os.UserHomeDir(); err == nil {
			if getenv("AWS_SHARED_CREDENTIALS_FILE") == "" {
				files = append(files, filepath.Join(home, ".aws", "credentials"))
			}
			if getenv("AWS_CONFIG_FILE") == "" {
				files = append(files, filepath.Join(home, ".aws", "config"))
			}
		}
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil && !st.IsDir() && st.Size() > 0 {
			return true
		}
	}
	return false
}

// localDescription is what GET /_local/stack returns.
type localDescription struct {
	Stack     string                   `json:"stack"`
	Region    string                   `json:"region"`
	Endpoint  string                   `json:"endpoint"`
	Resources map[string]stackResource `json:"resources"`
	Outputs   map[string]string        `json:"outputs"`
}

func resolveLocal(ctx context.Context, o stackOptions, client *http.Client) (*stackRef, error) {
	base := o.api
	if base == "" {
		base = "http://" + envOr("CRMSYNC_HTTP_ADDR", "127.0.0.1:3000")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_local/stack", nil)
	if err != nil {
		return nil, fmt.Errorf("local stack at %s: %w", base, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("local stack at %s (is `crmsync-dev dev` running?): %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("local stack at %s: GET /_local/stack: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var d localDescription
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("local stack at %s: bad /_local/stack document: %w", base, err)
	}
	if o.stackSet && o.stack != d.Stack {
		return nil, fmt.Errorf("the local stack at %s is %q, not %q", base, d.Stack, o.stack)
	}
	region := o.region
	if region == "" {
		region = d.Region
	}
	if region == "" {
		region = regionFromARNs(d.Resources)
	}
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := awsclient.Load(ctx, d.Endpoint, opts...)
	if err != nil {
		return nil, err
	}
	ref := &stackRef{Name: d.Stack, Region: cfg.Region, Local: true, Endpoint: d.Endpoint, APIBase: base,
		Resources: d.Resources, Outputs: d.Outputs, AWS: cfg}
	ref.fill()
	return ref, nil
}

// regionFromARNs returns the region of the first resource ARN that carries one.
func regionFromARNs(res map[string]stackResource) string {
	for _, r := range res {
		if parts := strings.SplitN(r.Attrs["Arn"], ":", 5); len(parts) == 5 && parts[3] != "" {
			return parts[3]
		}
	}
	return ""
}

// cfnAPI is the part of CloudFormation resolveStack uses.
type cfnAPI interface {
	DescribeStacks(context.Context, *cloudformation.DescribeStacksInput, ...func(*cloudformation.Options)) (*cloudformation.DescribeStacksOutput, error)
	ListStackResources(context.Context, *cloudformation.ListStackResourcesInput, ...func(*cloudformation.Options)) (*cloudformation.ListStackResourcesOutput, error)
}

func resolveAWS(ctx context.Context, o stackOptions, cfg aws.Config, cfn cfnAPI) (*stackRef, error) {
	ds, err := cfn.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: aws.String(o.stack)})
	if err != nil {
		return nil, fmt.Errorf("describe stack %s: %w", o.stack, err)
	}
	if len(ds.Stacks) == 0 {
		return nil, fmt.Errorf("stack %s not found", o.stack)
	}
	ref := &stackRef{Name: o.stack, Region: cfg.Region, AWS: cfg, Resources: map[string]stackResource{}, Outputs: map[string]string{}}
	for _, out := range ds.Stacks[0].Outputs {
		ref.Outputs[aws.ToString(out.OutputKey)] = aws.ToString(out.OutputValue)
	}
	p := cloudformation.NewListStackResourcesPaginator(cfn, &cloudformation.ListStackResourcesInput{StackName: aws.String(o.stack)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list resources of stack %s: %w", o.stack, err)
		}
		for _, r := range page.StackResourceSummaries {
			ref.Resources[aws.ToString(r.LogicalResourceId)] = stackResource{Type: aws.ToString(r.ResourceType), Ref: aws.ToString(r.PhysicalResourceId)}
		}
	}
	ref.APIBase = strings.TrimRight(ref.Outputs["HttpApiUrl"], "/")
	if o.api != "" {
		ref.APIBase = o.api
	}
	ref.fill()
	return ref, nil
}

// fill sets the well-known names from the outputs, falling back to the resources' physical ids.
func (s *stackRef) fill() {
	pick := func(output, logicalID string) string {
		if v := s.Outputs[output]; v != "" {
			return v
		}
		return s.Resources[logicalID].Ref
	}
	s.LedgerTable = pick("LedgerTableName", "LedgerTable")
	s.CrmTable = pick("CrmTableName", "CrmTable")
	s.ReplayTable = pick("ReplayTableName", "ReplayTable")
	s.IngestQueueURL = pick("IngestQueueUrl", "IngestQueue")
	s.DLQURL = pick("IngestDlqUrl", "IngestDLQ")
	s.QuarantineBucket = pick("QuarantineBucketName", "QuarantineBucket")
	s.AlarmTopicArn = pick("AlarmTopicArn", "AlarmTopic")
}

// require reports an error naming every well-known resource in names that the stack lacks.
func (s *stackRef) require(names ...string) error {
	have := map[string]string{"LedgerTable": s.LedgerTable, "CrmTable": s.CrmTable, "ReplayTable": s.ReplayTable,
		"IngestQueue": s.IngestQueueURL, "IngestDLQ": s.DLQURL, "QuarantineBucket": s.QuarantineBucket, "HttpApi": s.APIBase}
	var missing []string
	for _, n := range names {
		if have[n] == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("stack %s: cannot resolve %s", s.Name, strings.Join(missing, ", "))
	}
	return nil
}

func isLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
