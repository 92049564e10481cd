package localcloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/tools/samtemplate"
)

// AccountID is the account moto uses; ARNs built locally use it too.
const AccountID = "123456789012"

// Stack is a provisioned local stack: the template, the physical value of every resource, and
// every function with its environment resolved.
type Stack struct {
	Name      string
	Region    string
	Template  *samtemplate.Template
	Physical  map[string]samtemplate.Physical
	Functions map[string]samtemplate.Function
	Outputs   map[string]string
}

// ProvisionOptions tune provisioning.
type ProvisionOptions struct {
	StackName string
	Region    string
	// DevSecrets maps a secret's logical id to the JSON value to seed it with.
	DevSecrets map[string]json.RawMessage
	// QueueAttributes override a queue's template attributes, by logical id (e.g. a shorter
	// VisibilityTimeout for a test run), before anything consumes the queue.
	QueueAttributes map[string]map[string]string
}

// LoadDevSecrets reads config/dev-secrets.json: {"<SecretLogicalId>": {"current": {...}}, ...}.
func LoadDevSecrets(path string) (map[string]json.RawMessage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read dev secrets: %w", err)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	delete(out, "_comment")
	return out, nil
}

// Provision creates (or brings up to date) every table, queue, secret, bucket and topic that the
// template declares, then resolves every function's environment against them.
func Provision(ctx context.Context, cfg aws.Config, t *samtemplate.Template, opts ProvisionOptions) (*Stack, error) {
	if opts.StackName == "" {
		opts.StackName = "crmsync-local"
	}
	if opts.Region == "" {
		opts.Region = cfg.Region
	}
	st := &Stack{Name: opts.StackName, Region: opts.Region, Template: t, Physical: map[string]samtemplate.Physical{},
		Functions: map[string]samtemplate.Function{}, Outputs: map[string]string{}}
	p := &provisioner{st: st, ddb: dynamodb.NewFromConfig(cfg), sqs: sqs.NewFromConfig(cfg),
		sm: secretsmanager.NewFromConfig(cfg), s3: s3.NewFromConfig(cfg), sns: sns.NewFromConfig(cfg), opts: opts}

	arn := func(service, resource string) string {
		return "arn:aws:" + service + ":" + st.Region + ":" + AccountID + ":" + resource
	}
	for _, id := range t.OfType(samtemplate.TypeHTTPAPI) {
		st.Physical[id] = samtemplate.Physical{Ref: "local", Attrs: map[string]string{"ApiEndpoint": "http://127.0.0.1"}}
	}
	for _, id := range t.OfType(samtemplate.TypeFunction) {
		name := st.Name + "-" + id
		st.Physical[id] = samtemplate.Physical{Ref: name, Attrs: map[string]string{"Arn": arn("lambda", "function:"+name)}}
	}
	steps := []struct {
		typ string
		fn  func(context.Context, string) error
	}{
		{samtemplate.TypeTable, p.table},
		{samtemplate.TypeBucket, p.bucket},
		{samtemplate.TypeTopic, p.topic},
		{samtemplate.TypeSecret, p.secret},
	}
	for _, s := range steps {
		for _, id := range t.OfType(s.typ) {
			if err := s.fn(ctx, id); err != nil {
				return nil, fmt.Errorf("provision %s: %w", id, err)
			}
		}
	}
	// Queues may refer to each other (redrive): create those whose references resolve first.
	pending := t.OfType(samtemplate.TypeQueue)
	for len(pending) > 0 {
		var next []string
		for _, id := range pending {
			if !p.resolvable(t.Resources[id].Properties) {
				next = append(next, id)
				continue
			}
			if err := p.queue(ctx, id); err != nil {
				return nil, fmt.Errorf("provision %s: %w", id, err)
			}
		}
		if len(next) == len(pending) {
			return nil, fmt.Errorf("provision queues %v: references that cannot be resolved", next)
		}
		pending = next
	}
	fns, err := t.Functions()
	if err != nil {
		return nil, err
	}
	for _, f := range fns {
		for k, v := range f.Env {
			if f.Env[k], err = samtemplate.Resolve(v, st.Physical); err != nil {
				return nil, fmt.Errorf("function %s env %s: %w", f.LogicalID, k, err)
			}
		}
		for i := range f.SQS {
			if f.SQS[i].Queue, err = samtemplate.Resolve(f.SQS[i].Queue, st.Physical); err != nil {
				return nil, fmt.Errorf("function %s event %s: %w", f.LogicalID, f.SQS[i].Name, err)
			}
		}
		st.Functions[f.LogicalID] = f
	}
	for name, v := range t.Outputs {
		st.Outputs[name], _ = samtemplate.Resolve(v, st.Physical)
	}
	return st, nil
}

type provisioner struct {
	st   *Stack
	ddb  *dynamodb.Client
	sqs  *sqs.Client
	sm   *secretsmanager.Client
	s3   *s3.Client
	sns  *sns.Client
	opts ProvisionOptions
}

func (p *provisioner) resolvable(props map[string]any) bool {
	b, _ := json.Marshal(props)
	_, err := samtemplate.Resolve(string(b), p.st.Physical)
	return err == nil
}

// props returns a resource's properties with every known reference resolved.
func (p *provisioner) props(id string) (map[string]any, error) {
	b, err := json.Marshal(p.st.Template.Resources[id].Properties)
	if err != nil {
		return nil, err
	}
	s, err := samtemplate.Resolve(string(b), p.st.Physical)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal([]byte(s), &out)
}

func (p *provisioner) arn(service, resource string) string {
	return "arn:aws:" + service + ":" + p.st.Region + ":" + AccountID + ":" + resource
}

func (p *provisioner) table(ctx context.Context, id string) error {
	props, err := p.props(id)
	if err != nil {
		return err
	}
	name := samtemplate.Str(props["TableName"])
	if name == "" {
		name = p.st.Name + "-" + id
	}
	in := &dynamodb.CreateTableInput{TableName: aws.String(name), BillingMode: ddbtypes.BillingModePayPerRequest}
	if samtemplate.Str(props["BillingMode"]) == "PROVISIONED" {
		in.BillingMode = ddbtypes.BillingModeProvisioned
		in.ProvisionedThroughput = &ddbtypes.ProvisionedThroughput{ReadCapacityUnits: aws.Int64(5), WriteCapacityUnits: aws.Int64(5)}
	}
	for _, a := range samtemplate.List(props["AttributeDefinitions"]) {
		am, _ := a.(map[string]any)
		in.AttributeDefinitions = append(in.AttributeDefinitions, ddbtypes.AttributeDefinition{
			AttributeName: aws.String(samtemplate.Str(am["AttributeName"])),
			AttributeType: ddbtypes.ScalarAttributeType(samtemplate.Str(am["AttributeType"])),
		})
	}
	in.KeySchema = keySchema(props["KeySchema"])
	for _, g := range samtemplate.List(props["GlobalSecondaryIndexes"]) {
		gm, _ := g.(map[string]any)
		gsi := ddbtypes.GlobalSecondaryIndex{IndexName: aws.String(samtemplate.Str(gm["IndexName"])),
			KeySchema: keySchema(gm["KeySchema"]), Projection: projection(gm["Projection"])}
		if in.BillingMode == ddbtypes.BillingModeProvisioned {
			gsi.ProvisionedThroughput = in.ProvisionedThroughput
		}
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, gsi)
	}
	for _, l := range samtemplate.List(props["LocalSecondaryIndexes"]) {
		lm, _ := l.(map[string]any)
		in.LocalSecondaryIndexes = append(in.LocalSecondaryIndexes, ddbtypes.LocalSecondaryIndex{
			IndexName: aws.String(samtemplate.Str(lm["IndexName"])), KeySchema: keySchema(lm["KeySchema"]), Projection: projection(lm["Projection"])})
	}
	if ss, ok := props["StreamSpecification"].(map[string]any); ok {
		in.StreamSpecification = &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true),
			StreamViewType: ddbtypes.StreamViewType(samtemplate.Str(ss["StreamViewType"]))}
	}
	_, err = p.ddb.CreateTable(ctx, in)
	var inUse *ddbtypes.ResourceInUseException
	switch {
	case errors.As(err, &inUse):
		// Exists from an earlier run against the same endpoint: keep its data.
	case err != nil:
		return fmt.Errorf("create table %s: %w", name, err)
	}
	if ttl, ok := props["TimeToLiveSpecification"].(map[string]any); ok && ttl["Enabled"] == true {
		if _, err := p.ddb.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{TableName: aws.String(name),
			TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{AttributeName: aws.String(samtemplate.Str(ttl["AttributeName"])), Enabled: aws.Bool(true)}}); err != nil &&
			!strings.Contains(err.Error(), "already enabled") {
			return fmt.Errorf("ttl %s: %w", name, err)
		}
	}
	if pitr, ok := props["PointInTimeRecoverySpecification"].(map[string]any); ok && pitr["PointInTimeRecoveryEnabled"] == true {
		if _, err := p.ddb.UpdateContinuousBackups(ctx, &dynamodb.UpdateContinuousBackupsInput{TableName: aws.String(name),
			PointInTimeRecoverySpecification: &ddbtypes.PointInTimeRecoverySpecification{PointInTimeRecoveryEnabled: aws.Bool(true)}}); err != nil {
			return fmt.Errorf("pitr %s: %w", name, err)
		}
	}
	p.st.Physical[id] = samtemplate.Physical{Ref: name, Attrs: map[string]string{"Arn": p.arn("dynamodb", "table/"+name)}}
	return nil
}

func keySchema(v any) []ddbtypes.KeySchemaElement {
	var out []ddbtypes.KeySchemaElement
	for _, k := range samtemplate.List(v) {
		km, _ := k.(map[string]any)
		out = append(out, ddbtypes.KeySchemaElement{AttributeName: aws.String(samtemplate.Str(km["AttributeName"])),
			KeyType: ddbtypes.KeyType(samtemplate.Str(km["KeyType"]))})
	}
	return out
}

func projection(v any) *ddbtypes.Projection {
	pm, _ := v.(map[string]any)
	pr := &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeAll}
	if t := samtemplate.Str(pm["ProjectionType"]); t != "" {
		pr.ProjectionType = ddbtypes.ProjectionType(t)
	}
	for _, a := range samtemplate.List(pm["NonKeyAttributes"]) {
		pr.NonKeyAttributes = append(pr.NonKeyAttributes, samtemplate.Str(a))
	}
	return pr
}

// queueAttributes maps CloudFormation queue properties to SQS attribute names.
var queueAttributes = []string{"ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
	"VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "MaximumMessageSize",
	"ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled"}

func (p *provisioner) queue(ctx context.Context, id string) error {
	props, err := p.props(id)
	if err != nil {
		return err
	}
	fifo := props["FifoQueue"] == true || samtemplate.Str(props["FifoQueue"]) == "true"
	name := samtemplate.Str(props["QueueName"])
	if name == "" {
		name = p.st.Name + "-" + id
		if fifo {
			name += ".fifo"
		}
	}
	attrs := map[string]string{}
	for _, a := range queueAttributes {
		if v, ok := props[a]; ok {
			attrs[a] = samtemplate.Str(v)
		}
	}
	for _, a := range []string{"RedrivePolicy", "RedriveAllowPolicy"} {
		if v, ok := props[a]; ok {
			if s, ok := v.(string); ok {
				attrs[a] = s
			} else {
				b, _ := json.Marshal(v)
				attrs[a] = string(b)
			}
		}
	}
	for k, v := range p.opts.QueueAttributes[id] {
		attrs[k] = v
	}
	create := map[string]string{}
	for k, v := range attrs {
		create[k] = v
	}
	if fifo {
		create["FifoQueue"] = "true"
	}
	out, err := p.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: create})
	var url string
	if err != nil {
		// An existing queue with other attributes: bring it up to date instead.
		got, gerr := p.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if gerr != nil {
			return fmt.Errorf("create queue %s: %w", name, err)
		}
		url = aws.ToString(got.QueueUrl)
	} else {
		url = aws.ToString(out.QueueUrl)
	}
	if len(attrs) > 0 {
		if _, err := p.sqs.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: aws.String(url), Attributes: attrs}); err != nil {
			return fmt.Errorf("set attributes %s: %w", name, err)
		}
	}
	p.st.Physical[id] = samtemplate.Physical{Ref: url, Attrs: map[string]string{
		"Arn": p.arn("sqs", name), "QueueName": name, "QueueUrl": url}}
	return nil
}

func (p *provisioner) secret(ctx context.Context, id string) error {
	props, err := p.props(id)
	if err != nil {
		return err
	}
	name := samtemplate.Str(props["Name"])
	if name == "" {
		name = p.st.Name + "/" + id
	}
	value := `{"current":{}}`
	if v := samtemplate.Str(props["SecretString"]); v != "" {
		value = v
	}
	if v, ok := p.opts.DevSecrets[id]; ok {
		value = string(v)
	}
	var arn string
	out, err := p.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretString: aws.String(value)})
	if err != nil {
		put, perr := p.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(name), SecretString: aws.String(value)})
		if perr != nil {
			return fmt.Errorf("create secret %s: %w", name, err)
		}
		arn = aws.ToString(put.ARN)
	} else {
		arn = aws.ToString(out.ARN)
	}
	p.st.Physical[id] = samtemplate.Physical{Ref: arn, Attrs: map[string]string{"Id": arn, "Name": name}}
	return nil
}

func (p *provisioner) bucket(ctx context.Context, id string) error {
	props, err := p.props(id)
	if err != nil {
		return err
	}
	name := samtemplate.Str(props["BucketName"])
	if name == "" {
		name = strings.ToLower(p.st.Name + "-" + id)
	}
	if _, err := p.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil &&
		!strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	p.st.Physical[id] = samtemplate.Physical{Ref: name, Attrs: map[string]string{"Arn": "arn:aws:s3:::" + name,
		"DomainName": name + ".s3.amazonaws.com"}}
	return nil
}

func (p *provisioner) topic(ctx context.Context, id string) error {
	props, err := p.props(id)
	if err != nil {
		return err
	}
	name := samtemplate.Str(props["TopicName"])
	if name == "" {
		name = p.st.Name + "-" + id
	}
	out, err := p.sns.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(name)})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	arn := aws.ToString(out.TopicArn)
	p.st.Physical[id] = samtemplate.Physical{Ref: arn, Attrs: map[string]string{"TopicArn": arn, "TopicName": name}}
	return nil
}

// Summary lists the provisioned resources, one line each, for the dev command's banner.
func (s *Stack) Summary() []string {
	var out []string
	for id, ph := range s.Physical {
		typ := s.Template.Resources[id].Type
		if typ == samtemplate.TypeFunction || typ == samtemplate.TypeHTTPAPI {
			continue
		}
		out = append(out, fmt.Sprintf("%-28s %-28s %s", id, typ, ph.Ref))
	}
	sort.Strings(out)
	return out
}
