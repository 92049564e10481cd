package main

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2authorizers"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2integrations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// Construct ids are template.yaml's logical ids (WorkerFunction, IngestQueue, ...): the parity test
// maps the two templates onto each other by them (through the aws:cdk:path metadata), so keep them
// equal when adding resources on both sides.

// StackConfig is what the stack needs from outside the code.
type StackConfig struct {
	// DistDir holds <LogicalId>/bootstrap for every function: the output of `make dist`.
	DistDir string
}

const stackDescription = "crmsync - CRM sync spine: webhook functions per connector behind an HTTP API, a FIFO ingest queue, an exactly-once worker, scheduled reconciliation, DynamoDB ledger and CRM tables, alarms."

type crmsync struct {
	stack awscdk.Stack
	cfg   StackConfig

	stage, alarmEmail, publicBaseURL, internalEmailDomains, graphMailboxes awscdk.CfnParameter

	api                    awsapigatewayv2.HttpApi
	ingestQueue, ingestDLQ awssqs.Queue
	ledger, crm, replay    awsdynamodb.Table
	graphSubscriptions     awsdynamodb.Table
	quarantine             awss3.Bucket
	secrets                map[string]awssecretsmanager.Secret // by connector Name
	alarmTopic             awssns.Topic
	functions              map[string]awslambda.Function
	functionLogGroups      map[string]awslogs.LogGroup
	basicExecutionPolicy   awsiam.IManagedPolicy
	lambdaServicePrincipal awsiam.IPrincipal
	payloadFormat          awsapigatewayv2.PayloadFormatVersion
}

// NewCrmsyncStack declares the whole system in one stack, the same one template.yaml declares.
func NewCrmsyncStack(scope constructs.Construct, id string, props *awscdk.StackProps, cfg StackConfig) awscdk.Stack {
	if props == nil {
		props = &awscdk.StackProps{}
	}
	if props.Description == nil {
		props.Description = jsii.String(stackDescription)
	}
	s := awscdk.NewStack(scope, jsii.String(id), props)
	c := &crmsync{
		stack:                  s,
		cfg:                    cfg,
		secrets:                map[string]awssecretsmanager.Secret{},
		functions:              map[string]awslambda.Function{},
		functionLogGroups:      map[string]awslogs.LogGroup{},
		basicExecutionPolicy:   awsiam.ManagedPolicy_FromAwsManagedPolicyName(jsii.String("service-role/AWSLambdaBasicExecutionRole")),
		lambdaServicePrincipal: awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		payloadFormat:          awsapigatewayv2.PayloadFormatVersion_VERSION_2_0(),
	}
	c.parameters()
	c.httpAPI()
	c.connectorSecrets()
	c.queues()
	c.tables()
	c.quarantineBucket()
	c.webhookFunctions()
	c.workerFunction()
	c.crmChangesFunction()
	c.reconcileFunctions()
	c.graphSubscriptionsFunction()
	c.alarms()
	c.dashboard()
	c.outputs()
	return s
}

// ---------------------------------------------------------------------------- parameters

func (c *crmsync) parameters() {
	c.stage = awscdk.NewCfnParameter(c.stack, jsii.String("Stage"), &awscdk.CfnParameterProps{
		Type:          jsii.String("String"),
		Default:       jsii.String("dev"),
		AllowedValues: jsii.Strings("dev", "staging", "prod"),
		Description:   jsii.String("Deployment stage; part of secret names and passed to every function as STAGE."),
	})
	c.alarmEmail = awscdk.NewCfnParameter(c.stack, jsii.String("AlarmEmail"), &awscdk.CfnParameterProps{
		Type:        jsii.String("String"),
		Default:     jsii.String(""),
		Description: jsii.String("Optional email address subscribed to the alarm topic (empty = no subscription)."),
	})
	c.publicBaseURL = awscdk.NewCfnParameter(c.stack, jsii.String("PublicBaseUrl"), &awscdk.CfnParameterProps{
		Type:        jsii.String("String"),
		Default:     jsii.String(""),
		Description: jsii.String("Public https base URL vendors call, e.g. a custom domain (https://hooks.example.com), without a trailing slash; empty = rebuilt from the request context."),
	})
	c.internalEmailDomains = awscdk.NewCfnParameter(c.stack, jsii.String("InternalEmailDomains"), &awscdk.CfnParameterProps{
		Type:        jsii.String("String"),
		Default:     jsii.String(""),
		Description: jsii.String("Comma-separated email domains of your own people (e.g. example.com); the worker uses them to tell mail your people sent from mail they received when it hydrates Graph messages."),
	})
	c.graphMailboxes = awscdk.NewCfnParameter(c.stack, jsii.String("GraphMailboxes"), &awscdk.CfnParameterProps{
		Type:        jsii.String("String"),
		Default:     jsii.String(""),
		Description: jsii.String("Comma-separated Microsoft Graph user ids or addresses whose mail and calendar crmsync keeps change-notification subscriptions for (the Graph subscriptions function); empty = none. Needs PublicBaseUrl (Graph calls back over https) and the msgraph secret's app credentials."),
	})
}

// ---------------------------------------------------------------------------- HTTP API

func (c *crmsync) httpAPI() {
	c.api = awsapigatewayv2.NewHttpApi(c.stack, jsii.String("HttpApi"), &awsapigatewayv2.HttpApiProps{
		ApiName:            awscdk.Aws_STACK_NAME(), // as SAM names it (the OpenAPI title)
		CreateDefaultStage: jsii.Bool(true),         // $default, auto-deployed
	})
	c.api.Node().DefaultChild().(awsapigatewayv2.CfnApi).SetFailOnWarnings(jsii.Bool(true))
}

// route adds METHOD path -> fn. iam=true requires SigV4 (AWS_IAM); no route has a default authorizer.
func (c *crmsync) route(path string, methods []string, fn awslambda.Function, fnID string, iam bool) {
	var ms []awsapigatewayv2.HttpMethod
	for _, m := range methods {
		ms = append(ms, awsapigatewayv2.HttpMethod(m))
	}
	opts := &awsapigatewayv2.AddRoutesOptions{
		Path:    jsii.String(path),
		Methods: &ms,
		Integration: awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String(fnID+"Integration"), fn,
			&awsapigatewayv2integrations.HttpLambdaIntegrationProps{PayloadFormatVersion: c.payloadFormat}),
	}
	if iam {
		opts.Authorizer = awsapigatewayv2authorizers.NewHttpIamAuthorizer()
	}
	c.api.AddRoutes(opts)
}

// ---------------------------------------------------------------------------- secrets

func (c *crmsync) connectorSecrets() {
	for _, k := range connectors {
		c.secrets[k.Name] = awssecretsmanager.NewSecret(c.stack, jsii.String(k.SecretID()), &awssecretsmanager.SecretProps{
			// Created with a placeholder value (no real secret); operators set the real JSON after deploy.
			SecretName: awscdk.Fn_Sub(jsii.String("crmsync/${Stage}/"+k.Source), nil),
			Description: jsii.String(fmt.Sprintf("crmsync %s connector secret. Set the JSON %s \"previous\" is optional and only needed while rotating.",
				k.Source, k.SecretFields)),
			GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
				SecretStringTemplate: jsii.String(`{"current":{}}`),
				GenerateStringKey:    jsii.String("placeholder"),
				PasswordLength:       jsii.Number(32),
				ExcludePunctuation:   jsii.Bool(true),
			},
			RemovalPolicy: awscdk.RemovalPolicy_DESTROY, // re-creating the stack must be able to reuse the fixed name
		})
	}
}

// ---------------------------------------------------------------------------- queues

func (c *crmsync) queues() {
	c.ingestDLQ = awssqs.NewQueue(c.stack, jsii.String("IngestDLQ"), &awssqs.QueueProps{
		Fifo:                      jsii.Bool(true),
		ContentBasedDeduplication: jsii.Bool(false),
		RetentionPeriod:           awscdk.Duration_Seconds(jsii.Number(1209600)),
		Encryption:                awssqs.QueueEncryption_SQS_MANAGED,
		RemovalPolicy:             awscdk.RemovalPolicy_DESTROY,
	})
	c.ingestQueue = awssqs.NewQueue(c.stack, jsii.String("IngestQueue"), &awssqs.QueueProps{
		Fifo:                      jsii.Bool(true),
		ContentBasedDeduplication: jsii.Bool(false),
		DeduplicationScope:        awssqs.DeduplicationScope_MESSAGE_GROUP,
		FifoThroughputLimit:       awssqs.FifoThroughputLimit_PER_MESSAGE_GROUP_ID,
		VisibilityTimeout:         awscdk.Duration_Seconds(jsii.Number(180)), // 6 x worker timeout (30 s)
		RetentionPeriod:           awscdk.Duration_Seconds(jsii.Number(1209600)),
		Encryption:                awssqs.QueueEncryption_SQS_MANAGED,
		DeadLetterQueue:           &awssqs.DeadLetterQueue{Queue: c.ingestDLQ, MaxReceiveCount: jsii.Number(5)},
		RemovalPolicy:             awscdk.RemovalPolicy_DESTROY,
	})
}

// ---------------------------------------------------------------------------- tables

type gsi struct{ name, hash, rng string }

func (c *crmsync) table(id, hash, rng string, removal awscdk.RemovalPolicy, indexes ...gsi) awsdynamodb.Table {
	props := &awsdynamodb.TableProps{
		PartitionKey: &awsdynamodb.Attribute{Name: jsii.String(hash), Type: awsdynamodb.AttributeType_STRING},
		BillingMode:  awsdynamodb.BillingMode_PAY_PER_REQUEST,
		PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
			PointInTimeRecoveryEnabled: jsii.Bool(true),
		},
		Encryption:          awsdynamodb.TableEncryption_AWS_MANAGED,
		TimeToLiveAttribute: jsii.String("expires_at"),
		RemovalPolicy:       removal,
	}
	if rng != "" {
		props.SortKey = &awsdynamodb.Attribute{Name: jsii.String(rng), Type: awsdynamodb.AttributeType_STRING}
	}
	t := awsdynamodb.NewTable(c.stack, jsii.String(id), props)
	for _, ix := range indexes {
		t.AddGlobalSecondaryIndex(&awsdynamodb.GlobalSecondaryIndexProps{
			IndexName:      jsii.String(ix.name),
			PartitionKey:   &awsdynamodb.Attribute{Name: jsii.String(ix.hash), Type: awsdynamodb.AttributeType_STRING},
			SortKey:        &awsdynamodb.Attribute{Name: jsii.String(ix.rng), Type: awsdynamodb.AttributeType_STRING},
			ProjectionType: awsdynamodb.ProjectionType_ALL,
		})
	}
	return t
}

func (c *crmsync) tables() {
	c.ledger = c.table("LedgerTable", "pk", "", awscdk.RemovalPolicy_RETAIN,
		gsi{"ByGroup", "group_key", "occurred_at"},
		gsi{"BySource", "source", "recorded_at"},
	)
	c.crm = c.table("CrmTable", "pk", "sk", awscdk.RemovalPolicy_RETAIN,
		gsi{"ByAccount", "account_id", "sk"},
		gsi{"Unassociated", "unassoc", "occurred_at"}, // sparse: only items carrying unassoc
	)
	c.replay = c.table("ReplayTable", "pk", "", awscdk.RemovalPolicy_DESTROY)
	// One item per (mailbox, resource) Graph subscription (shared/graphsub): operational state Graph
	// can recreate, kept apart from the CRM and the ledger.
	c.graphSubscriptions = c.table("GraphSubscriptionTable", "pk", "", awscdk.RemovalPolicy_DESTROY)
}

// ---------------------------------------------------------------------------- quarantine bucket

func (c *crmsync) quarantineBucket() {
	c.quarantine = awss3.NewBucket(c.stack, jsii.String("QuarantineBucket"), &awss3.BucketProps{
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		Versioned:         jsii.Bool(true),
		EnforceSSL:        jsii.Bool(true), // the bucket policy denying insecure transport
		LifecycleRules: &[]*awss3.LifecycleRule{
			{Id: jsii.String("ExpireNoncurrentVersions"), Enabled: jsii.Bool(true), NoncurrentVersionExpiration: awscdk.Duration_Days(jsii.Number(30))},
			{Id: jsii.String("ExpireQuarantine"), Enabled: jsii.Bool(true), Prefix: jsii.String("quarantine/"), Expiration: awscdk.Duration_Days(jsii.Number(400))},
		},
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
}

// ---------------------------------------------------------------------------- functions and roles

type fnSpec struct {
	ID          string
	Description string
	MemoryMB    float64 // 0 = default
	TimeoutSec  float64 // 0 = default
	Reserved    float64 // reserved concurrency; 0 = none
	Env         map[string]*string
	Role        awsiam.IRole
}

// allow is one Allow statement of an identity policy.
func allow(actions []string, resources ...*string) awsiam.PolicyStatement {
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Effect:    awsiam.Effect_ALLOW,
		Actions:   jsii.Strings(actions...),
		Resources: &resources,
	})
}

// samStyleRole is the role SAM generates for a function with Policies: the AWS managed basic execution
// policy (CloudWatch Logs) plus one inline policy with the function's statements.
func (c *crmsync) samStyleRole(fnID string, statements ...awsiam.PolicyStatement) awsiam.Role {
	return awsiam.NewRole(c.stack, jsii.String(fnID+"Role"), &awsiam.RoleProps{
		AssumedBy:       c.lambdaServicePrincipal,
		ManagedPolicies: &[]awsiam.IManagedPolicy{c.basicExecutionPolicy},
		InlinePolicies: &map[string]awsiam.PolicyDocument{
			fnID + "RolePolicy0": awsiam.NewPolicyDocument(&awsiam.PolicyDocumentProps{Statements: &statements}),
		},
	})
}

func (c *crmsync) function(f fnSpec) awslambda.Function {
	env := map[string]*string{"STAGE": c.stage.ValueAsString()}
	for k, v := range f.Env {
		env[k] = v
	}
	props := &awslambda.FunctionProps{
		Description:           jsii.String(f.Description),
		Runtime:               awslambda.Runtime_PROVIDED_AL2023(),
		Architecture:          awslambda.Architecture_ARM_64(),
		Handler:               jsii.String("bootstrap"),
		Code:                  awslambda.Code_FromAsset(jsii.String(filepath.Join(c.cfg.DistDir, f.ID)), nil),
		MemorySize:            jsii.Number(or(f.MemoryMB, defaultMemoryMB)),
		Timeout:               awscdk.Duration_Seconds(jsii.Number(or(f.TimeoutSec, defaultTimeoutSec))),
		Environment:           &env,
		LoggingFormat:         awslambda.LoggingFormat_JSON,
		ApplicationLogLevelV2: awslambda.ApplicationLogLevel_INFO,
		SystemLogLevelV2:      awslambda.SystemLogLevel_WARN,
		Role:                  f.Role,
	}
	if f.Reserved > 0 {
		props.ReservedConcurrentExecutions = jsii.Number(f.Reserved)
	}
	fn := awslambda.NewFunction(c.stack, jsii.String(f.ID), props)
	// The L2 function also lists its role in DependsOn, which the Role GetAtt already enforces
	// (cfn-lint W3005). Its roles have inline policies only, so there is no other dependency to keep.
	fn.Node().DefaultChild().(awscdk.CfnResource).AddDeletionOverride(jsii.String("DependsOn"))
	c.functions[f.ID] = fn
	// The function's log group, declared so that it has a retention and goes with the stack.
	c.functionLogGroups[f.ID] = awslogs.NewLogGroup(c.stack, jsii.String(f.ID+"LogGroup"), &awslogs.LogGroupProps{
		LogGroupName:  awscdk.Fn_Join(jsii.String(""), jsii.Strings("/aws/lambda/", *fn.FunctionName())),
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	return fn
}

func or(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

func (c *crmsync) indexARNs(t awsdynamodb.Table) []*string {
	return []*string{t.TableArn(), awscdk.Fn_Join(jsii.String(""), jsii.Strings(*t.TableArn(), "/index/*"))}
}

func (c *crmsync) webhookFunctions() {
	for _, k := range connectors {
		secret := c.secrets[k.Name]
		statements := []awsiam.PolicyStatement{
			allow([]string{"secretsmanager:GetSecretValue"}, secret.SecretArn()),
			allow([]string{"sqs:SendMessage"}, c.ingestQueue.QueueArn()),
			allow([]string{"s3:PutObject"}, c.quarantine.ArnForObjects(jsii.String("quarantine/"+k.Source+"/*"))),
		}
		env := map[string]*string{
			"CONNECTOR":          jsii.String(k.Source),
			"SECRET_ID":          secret.SecretArn(),
			"INGEST_QUEUE_URL":   c.ingestQueue.QueueUrl(),
			"QUARANTINE_BUCKET":  c.quarantine.BucketName(),
			"PUBLIC_BASE_URL":    c.publicBaseURL.ValueAsString(),
			"MAX_BODY_BYTES":     jsii.String("1048576"),
			"SECRET_TTL_SECONDS": jsii.String("300"),
		}
		if k.ReplayTable {
			statements = append(statements, allow([]string{"dynamodb:PutItem"}, c.replay.TableArn()))
			env["REPLAY_TABLE"] = c.replay.TableName()
		}
		fn := c.function(fnSpec{
			ID:          k.FunctionID(),
			Description: "crmsync webhook receiver for " + k.Source,
			Env:         env,
			Role:        c.samStyleRole(k.FunctionID(), statements...),
		})
		c.route("/webhooks/"+k.Source, k.Methods, fn, k.FunctionID(), false)
	}
}

// workerFunction: an explicit role rather than a SAM-style one. Consuming the queue takes the four
// SQS actions on IngestQueue alone (SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole,
// which allows them on every queue), and the logs permissions are scoped to its own log group.
func (c *crmsync) workerFunction() {
	tables := append(c.indexARNs(c.ledger), c.indexARNs(c.crm)...)
	role := awsiam.NewRole(c.stack, jsii.String("WorkerFunctionRole"), &awsiam.RoleProps{
		AssumedBy: c.lambdaServicePrincipal,
		InlinePolicies: &map[string]awsiam.PolicyDocument{
			"WorkerFunctionPolicy": awsiam.NewPolicyDocument(&awsiam.PolicyDocumentProps{Statements: &[]awsiam.PolicyStatement{
				allow([]string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"},
					c.ingestQueue.QueueArn()),
				// Transactions are authorized per item (Put, ConditionCheck); BatchGetItem reads a
				// plan's items ahead.
				allow([]string{"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"},
					tables...),
				allow([]string{"secretsmanager:GetSecretValue"}, c.secrets["MetaLeads"].SecretArn(), c.secrets["Msgraph"].SecretArn()),
			}}),
		},
	})
	fn := c.function(fnSpec{
		ID:          "WorkerFunction",
		Description: "crmsync worker - applies ingest events exactly once",
		TimeoutSec:  30,
		MemoryMB:    512,
		Reserved:    50,
		Role:        role,
		Env: map[string]*string{
			"LEDGER_TABLE":           c.ledger.TableName(),
			"CRM_TABLE":              c.crm.TableName(),
			"POLICY_PATH":            jsii.String(""), // empty = the policy embedded at build
			"LEDGER_RETENTION_DAYS":  jsii.String("400"),
			"META_LEADS_SECRET_ID":   c.secrets["MetaLeads"].SecretArn(),
			"MSGRAPH_SECRET_ID":      c.secrets["Msgraph"].SecretArn(),
			"META_GRAPH_BASE_URL":    jsii.String("https://graph.facebook.com/v21.0"),
			"MSGRAPH_BASE_URL":       jsii.String("https://graph.microsoft.com/v1.0"),
			"MSGRAPH_LOGIN_BASE_URL": jsii.String("https://login.microsoftonline.com"), // app tokens (client credentials)
			"INTERNAL_EMAIL_DOMAINS": c.internalEmailDomains.ValueAsString(),
		},
	})
	// Logs in a policy of its own: the log group's name refers to the function, which depends on
	// its role, so a statement inside the role would make a cycle.
	awsiam.NewPolicy(c.stack, jsii.String("WorkerFunctionLogsPolicy"), &awsiam.PolicyProps{
		PolicyName: jsii.String("WorkerFunctionLogs"),
		Roles:      &[]awsiam.IRole{role},
		Statements: &[]awsiam.PolicyStatement{
			allow([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, c.functionLogGroups["WorkerFunction"].LogGroupArn()),
		},
	})
	awslambda.NewEventSourceMapping(c.stack, jsii.String("WorkerFunctionIngest"), &awslambda.EventSourceMappingProps{
		Target:                  fn,
		EventSourceArn:          c.ingestQueue.QueueArn(),
		BatchSize:               jsii.Number(10),
		ReportBatchItemFailures: jsii.Bool(true),
	})
}

// crmChangesFunction: the CRM's own edits, POST /crm/changes with SigV4 (AWS_IAM).
func (c *crmsync) crmChangesFunction() {
	const id = "CrmChangesFunction"
	fn := c.function(fnSpec{
		ID:          id,
		Description: "crmsync CRM changes - POST /crm/changes (IAM-authorized)",
		Env: map[string]*string{
			"INGEST_QUEUE_URL": c.ingestQueue.QueueUrl(),
			"CRM_TABLE":        c.crm.TableName(), // identity items: every CRM edit of a contact in its FIFO group
			"POLICY_PATH":      jsii.String(""),   // empty = the policy embedded at build
		},
		Role: c.samStyleRole(id, allow([]string{"sqs:SendMessage"}, c.ingestQueue.QueueArn()),
			sidAllow("IdentityLookup", []string{"dynamodb:GetItem"},
				map[string]any{"ForAllValues:StringLike": map[string]any{"dynamodb:LeadingKeys": []string{"IDENT#*"}}},
				c.crm.TableArn())),
	})
	c.route("/crm/changes", []string{"POST"}, fn, id, true)
}

func (c *crmsync) reconcileFunctions() {
	for _, j := range reconcileJobs {
		env := map[string]*string{
			"JOB":               jsii.String(j.Job),
			"LEDGER_TABLE":      c.ledger.TableName(),
			"CRM_TABLE":         c.crm.TableName(),
			"INGEST_QUEUE_URL":  c.ingestQueue.QueueUrl(),
			"DLQ_URL":           c.ingestDLQ.QueueUrl(),
			"QUARANTINE_BUCKET": c.quarantine.BucketName(),
		}
		if j.VendorAPIs {
			for _, l := range listableConnectors {
				env[l.EnvPrefix+"_SECRET_ID"] = c.secrets[l.Name].SecretArn()
				env[l.EnvPrefix+"_API_BASE_URL"] = jsii.String(l.APIBaseURL)
			}
		}
		fn := c.function(fnSpec{
			ID:          j.ID,
			Description: j.Description,
			TimeoutSec:  300,
			MemoryMB:    512,
			Role:        c.samStyleRole(j.ID, c.reconcilePolicy(j)...),
			Env:         env,
		})
		awsevents.NewRule(c.stack, jsii.String(j.ID+"Schedule"), &awsevents.RuleProps{
			Schedule: awsevents.Schedule_Expression(jsii.String(j.Schedule)),
			Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(fn, &awseventstargets.LambdaFunctionProps{
				Event: awsevents.RuleTargetInput_FromObject(map[string]string{"job": j.Job}),
			})},
		})
	}
}

// sidAllow is an Allow statement with a Sid and an optional condition.
func sidAllow(sid string, actions []string, condition map[string]any, resources ...*string) awsiam.PolicyStatement {
	p := &awsiam.PolicyStatementProps{
		Sid:       jsii.String(sid),
		Effect:    awsiam.Effect_ALLOW,
		Actions:   jsii.Strings(actions...),
		Resources: &resources,
	}
	if condition != nil {
		p.Conditions = &condition
	}
	return awsiam.NewPolicyStatement(p)
}

// reconcilePolicy: what each reconcile job reads and writes (shared/reconcile).
func (c *crmsync) reconcilePolicy(j reconcileJob) []awsiam.PolicyStatement {
	index := func(t awsdynamodb.Table, name string) *string {
		return awscdk.Fn_Join(jsii.String(""), jsii.Strings(*t.TableArn(), "/index/"+name))
	}
	common := []awsiam.PolicyStatement{
		// DLQ depth, ingest backlog
		sidAllow("StuckWorkCounts", []string{"sqs:GetQueueAttributes"}, nil, c.ingestQueue.QueueArn(), c.ingestDLQ.QueueArn()),
		sidAllow("QuarantineCount", []string{"s3:ListBucket"},
			map[string]any{"StringLike": map[string]any{"s3:prefix": "quarantine/*"}}, c.quarantine.BucketArn()),
	}
	read := []string{"dynamodb:GetItem", "dynamodb:Query"}
	switch j.Job {
	case "parity":
		var secrets []*string
		for _, l := range listableConnectors {
			secrets = append(secrets, c.secrets[l.Name].SecretArn())
		}
		return append([]awsiam.PolicyStatement{
			// listed items by key, equivalent events (ByGroup), unfinished events (BySource), Rebuild
			// (BatchGetItem of the contact's ledger items)
			sidAllow("LedgerRead", append(slices.Clone(read), "dynamodb:BatchGetItem"), nil, c.ledger.TableArn(), index(c.ledger, "*")),
			// profiles of the window's contacts (found through the ledger), earlier reports
			sidAllow("CrmRead", read, nil, c.crm.TableArn()),
			// the run's report and findings
			sidAllow("StoreFindings", []string{"dynamodb:PutItem"}, nil, c.crm.TableArn()),
			// missing vendor items, through the same queue as webhooks
			sidAllow("Backfill", []string{"sqs:SendMessage"}, nil, c.ingestQueue.QueueArn()),
		}, append(common,
			// list credentials of the listable connectors
			sidAllow("ListVendors", []string{"secretsmanager:GetSecretValue"}, nil, secrets...))...)
	case "consistency":
		return append([]awsiam.PolicyStatement{
			// the window's contacts, from the ledger items that wrote them
			sidAllow("LedgerBySource", []string{"dynamodb:Query"}, nil, index(c.ledger, "BySource")),
			// unassociated activities, the window's contacts, claims, deals; re-association (TransactWriteItems of Puts); reports
			sidAllow("CrmReadRepair", read, nil, c.crm.TableArn(), index(c.crm, "*")),
			sidAllow("RepairAndStoreFindings", []string{"dynamodb:PutItem"}, nil, c.crm.TableArn()),
		}, common...)
	case "mapping-review":
		return append([]awsiam.PolicyStatement{
			// the window's ledger items per connector
			sidAllow("LedgerBySource", []string{"dynamodb:Query"}, nil, index(c.ledger, "BySource")),
			// the run's report and findings
			sidAllow("StoreFindings", []string{"dynamodb:PutItem"}, nil, c.crm.TableArn()),
		}, common...)
	}
	panic("reconcile job without a policy: " + j.Job)
}

// ---------------------------------------------------------------------------- outputs

func (c *crmsync) outputs() {
	apiURL := func(path string) *string {
		return awscdk.Fn_Sub(jsii.String("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"+path),
			&map[string]*string{"HttpApi": c.api.ApiId()})
	}
	out := func(id, description string, value *string) {
		p := &awscdk.CfnOutputProps{Value: value}
		if description != "" {
			p.Description = jsii.String(description)
		}
		awscdk.NewCfnOutput(c.stack, jsii.String(id), p)
	}
	for _, k := range connectors {
		out(k.OutputID(), "URL to configure in "+k.Source+" for webhook deliveries", apiURL("/webhooks/"+k.Source))
	}
	out("GraphLifecycleUrl", "lifecycleNotificationUrl the Graph subscriptions function gives Graph (with PublicBaseUrl, under it)",
		apiURL("/webhooks/msgraph/lifecycle"))
	out("CrmChangesUrl", "IAM-authorized (SigV4, service execute-api) URL the CRM posts its changes to", apiURL("/crm/changes"))
	out("HttpApiUrl", "Base URL of the HTTP API", apiURL(""))
	out("IngestQueueUrl", "", c.ingestQueue.QueueUrl())
	out("IngestDlqUrl", "", c.ingestDLQ.QueueUrl())
	out("LedgerTableName", "", c.ledger.TableName())
	out("CrmTableName", "", c.crm.TableName())
	out("ReplayTableName", "", c.replay.TableName())
	out("GraphSubscriptionTableName", "", c.graphSubscriptions.TableName())
	out("QuarantineBucketName", "", c.quarantine.BucketName())
	out("AlarmTopicArn", "", c.alarmTopic.TopicArn())
}

// ---------------------------------------------------------------------------- Graph subscriptions

// graphSubscriptionsFunction keeps the Graph mail and calendar subscriptions (shared/graphsub): a
// schedule, and the lifecycle route Graph calls.
func (c *crmsync) graphSubscriptionsFunction() {
	const id = "GraphSubscriptionsFunction"
	byGroup := awscdk.Fn_Join(jsii.String(""), jsii.Strings(*c.ledger.TableArn(), "/index/ByGroup"))
	fn := c.function(fnSpec{
		ID:          id,
		Description: "crmsync Graph subscriptions - keep mail and calendar subscriptions, resync gaps",
		TimeoutSec:  300,
		Env: map[string]*string{
			"SUBSCRIPTION_TABLE":                  c.graphSubscriptions.TableName(),
			"LEDGER_TABLE":                        c.ledger.TableName(),
			"INGEST_QUEUE_URL":                    c.ingestQueue.QueueUrl(),
			"MSGRAPH_SECRET_ID":                   c.secrets["Msgraph"].SecretArn(),
			"MSGRAPH_BASE_URL":                    jsii.String("https://graph.microsoft.com/v1.0"),
			"MSGRAPH_LOGIN_BASE_URL":              jsii.String("https://login.microsoftonline.com"),
			"PUBLIC_BASE_URL":                     c.publicBaseURL.ValueAsString(),
			"GRAPH_MAILBOXES":                     c.graphMailboxes.ValueAsString(),
			"INTERNAL_EMAIL_DOMAINS":              c.internalEmailDomains.ValueAsString(),
			"GRAPH_SUBSCRIPTION_LIFETIME_MINUTES": jsii.String("4320"),
			"GRAPH_RENEW_BEFORE_MINUTES":          jsii.String("1440"),
			"GRAPH_ALARM_MARGIN_MINUTES":          jsii.String("720"),
			"GRAPH_RESYNC_LOOKBACK_MINUTES":       jsii.String("1440"),
			"GRAPH_RESYNC_MAX":                    jsii.String("500"),
			"SECRET_TTL_SECONDS":                  jsii.String("300"),
		},
		Role: c.samStyleRole(id,
			// its state items: list, read, write, record lifecycle requests
			sidAllow("SubscriptionState", []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Scan"}, nil,
				c.graphSubscriptions.TableArn()),
			// resync: does the ledger hold the event's key
			sidAllow("LedgerByKey", []string{"dynamodb:GetItem"}, nil, c.ledger.TableArn()),
			// resync: does it hold an equivalent event of the same group
			sidAllow("LedgerByGroup", []string{"dynamodb:Query"}, nil, byGroup),
			// what the ledger lacks, through the same queue as webhooks
			sidAllow("Resync", []string{"sqs:SendMessage"}, nil, c.ingestQueue.QueueArn()),
			// client_state, tenant_id, client_id, client_secret
			sidAllow("GraphCredentials", []string{"secretsmanager:GetSecretValue"}, nil, c.secrets["Msgraph"].SecretArn()),
		),
	})
	c.route("/webhooks/msgraph/lifecycle", []string{"POST"}, fn, id, false)
	awsevents.NewRule(c.stack, jsii.String(id+"Schedule"), &awsevents.RuleProps{
		Schedule: awsevents.Schedule_Expression(jsii.String("rate(15 minutes)")),
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(fn, &awseventstargets.LambdaFunctionProps{
			Event: awsevents.RuleTargetInput_FromObject(map[string]string{"action": "ensure"}),
		})},
	})
}
