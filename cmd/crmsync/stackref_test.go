package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	cfntypes "github.com/aws/aws-sdk-go-v2/service/cloudformation/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/awsclient"
)

// fakeCFN serves one stack's outputs and its resources in pages of two.
type fakeCFN struct {
	outputs   map[string]string
	resources [][2]string
}

func (f *fakeCFN) DescribeStacks(_ context.Context, in *cloudformation.DescribeStacksInput, _ ...func(*cloudformation.Options)) (*cloudformation.DescribeStacksOutput, error) {
	st := cfntypes.Stack{StackName: in.StackName}
	for k, v := range f.outputs {
		st.Outputs = append(st.Outputs, cfntypes.Output{OutputKey: aws.String(k), OutputValue: aws.String(v)})
	}
	return &cloudformation.DescribeStacksOutput{Stacks: []cfntypes.Stack{st}}, nil
}

func (f *fakeCFN) ListStackResources(_ context.Context, in *cloudformation.ListStackResourcesInput, _ ...func(*cloudformation.Options)) (*cloudformation.ListStackResourcesOutput, error) {
	start := 0
	if in.NextToken != nil {
		start = int(aws.ToString(in.NextToken)[0] - '0')
	}
	out := &cloudformation.ListStackResourcesOutput{}
	for i := start; i < len(f.resources) && i < start+2; i++ {
		out.StackResourceSummaries = append(out.StackResourceSummaries, cfntypes.StackResourceSummary{
			LogicalResourceId: aws.String(f.resources[i][0]), PhysicalResourceId: aws.String(f.resources[i][1])})
	}
	if start+2 < len(f.resources) {
		out.NextToken = aws.String(string(rune('0' + start + 2)))
	}
	return out, nil
}

func TestResolveAWSFromOutputsAndResources(t *testing.T) {
	cfn := &fakeCFN{
		outputs: map[string]string{"HttpApiUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/", "CrmTableName": "crm-from-output"},
		resources: [][2]string{{"CrmTable", "crm-physical"}, {"LedgerTable", "ledger-physical"}, {"ReplayTable", "replay-physical"},
			{"IngestQueue", "https://sqs.eu-west-1.amazonaws.com/1/ingest.fifo"}, {"IngestDLQ", "https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo"},
			{"QuarantineBucket", "quarantine-bucket"}, {"WorkerFunction", "crmsync-WorkerFunction-XYZ"}},
	}
	ref, err := resolveAWS(context.Background(), stackOptions{stack: "crmsync-prod"}, aws.Config{Region: "eu-west-1"}, cfn)
	if err != nil {
		t.Fatal(err)
	}
	want := stackRef{Name: "crmsync-prod", Region: "eu-west-1", APIBase: "https://abc.execute-api.eu-west-1.amazonaws.com",
		CrmTable: "crm-from-output", LedgerTable: "ledger-physical", ReplayTable: "replay-physical",
		IngestQueueURL: "https://sqs.eu-west-1.amazonaws.com/1/ingest.fifo", DLQURL: "https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo",
		QuarantineBucket: "quarantine-bucket"}
	if diff := cmp.Diff(want, *ref, cmpopts.IgnoreFields(stackRef{}, "AWS", "Resources", "Outputs")); diff != "" {
		t.Errorf("resolved (-want +got):\n%s", diff)
	}
	if fn, err := ref.Function("WorkerFunction"); err != nil || fn != "crmsync-WorkerFunction-XYZ" {
		t.Errorf("Function(WorkerFunction) = %q, %v", fn, err)
	}
	if _, err := ref.Function("NoSuchFunction"); err == nil {
		t.Error("Function of an unknown id did not fail")
	}
	if err := ref.require("CrmTable", "HttpApi"); err != nil {
		t.Error(err)
	}
}

func TestStackFlagsChooseLocal(t *testing.T) {
	for _, c := range []struct {
		args     []string
		endpoint string
		local    bool
	}{
		{nil, "", false},
		{[]string{"--local"}, "", true},
		{nil, "http://127.0.0.1:4566", true},
		{[]string{"--local=false"}, "http://127.0.0.1:4566", false},
		{[]string{"--api", "http://127.0.0.1:3000"}, "", true},
		{[]string{"--api", "http://localhost:3000/"}, "", true},
		{[]string{"--api", "https://abc.execute-api.eu-west-1.amazonaws.com"}, "", false},
	} {
		t.Setenv(awsclient.EndpointEnv, c.endpoint)
		var got stackOptions
		root := &cobra.Command{Use: "crmsync"}
		addStackFlags(root.PersistentFlags())
		root.AddCommand(&cobra.Command{Use: "probe", RunE: func(cmd *cobra.Command, _ []string) error {
			got = stackOptionsFrom(cmd)
			return nil
		}})
		root.SetArgs(append([]string{"probe"}, c.args...))
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if got.local != c.local {
			t.Errorf("args %v, %s=%q: local = %v, want %v", c.args, awsclient.EndpointEnv, c.endpoint, got.local, c.local)
		}
	}
}

// The local stack describes itself at /_local/stack: every name matches what it provisioned.
func TestResolveLocalStack(t *testing.T) {
	s := startStack(t, false)
	ref, err := resolveLocal(context.Background(), stackOptions{api: s.publicBase()}, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	phys := s.Stack.Physical
	if !ref.Local || ref.Name != s.Stack.Name || ref.Endpoint != s.Endpoint || ref.Region != s.AWS.Region || ref.APIBase != s.publicBase() ||
		ref.CrmTable != phys["CrmTable"].Ref || ref.LedgerTable != phys["LedgerTable"].Ref || ref.ReplayTable != phys["ReplayTable"].Ref ||
		ref.IngestQueueURL != phys["IngestQueue"].Ref || ref.DLQURL != phys["IngestDLQ"].Ref || ref.QuarantineBucket != phys["QuarantineBucket"].Ref {
		t.Errorf("resolved %+v", ref)
	}
	if _, err := resolveLocal(context.Background(), stackOptions{api: s.publicBase(), stack: "other", stackSet: true}, http.DefaultClient); err == nil {
		t.Error("--stack naming another stack than the local one did not fail")
	}
}
