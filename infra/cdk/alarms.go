package main

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/jsii-runtime-go"
)

// Every alarm notifies AlarmTopic on ALARM and on OK, and its description names its runbook
// (docs/runbooks/<name>.md).

// metricSpec is one CloudWatch metric (namespace, name, dimensions) with its statistic and period.
type metricSpec struct {
	Namespace, Name string
	Dimensions      map[string]*string
	Statistic       string
	PeriodSec       float64
}

func (m metricSpec) metric() awscloudwatch.Metric {
	p := &awscloudwatch.MetricProps{
		Namespace:  jsii.String(m.Namespace),
		MetricName: jsii.String(m.Name),
		Statistic:  jsii.String(m.Statistic),
		Period:     awscdk.Duration_Seconds(jsii.Number(m.PeriodSec)),
	}
	if len(m.Dimensions) > 0 {
		p.DimensionsMap = &m.Dimensions
	}
	return awscloudwatch.NewMetric(p)
}

type alarmSpec struct {
	ID, Description   string
	Metric            metricSpec // a plain metric alarm, or
	Math              *mathSpec  // a metric math alarm
	EvaluationPeriods float64
	DatapointsToAlarm float64 // 0 = EvaluationPeriods
	Threshold         float64
	Comparison        awscloudwatch.ComparisonOperator
	TreatMissingData  awscloudwatch.TreatMissingData
}

type mathSpec struct {
	Expression, Label string
	PeriodSec         float64
	Using             map[string]metricSpec
}

func (c *crmsync) alarms() {
	c.alarmTopic = awssns.NewTopic(c.stack, jsii.String("AlarmTopic"), nil)
	c.alarmTopic.Node().DefaultChild().(awssns.CfnTopic).SetKmsMasterKeyId(jsii.String("alias/aws/sns")) // the AWS managed key
	sub := awssns.NewCfnSubscription(c.stack, jsii.String("AlarmEmailSubscription"), &awssns.CfnSubscriptionProps{
		TopicArn: c.alarmTopic.TopicArn(),
		Protocol: jsii.String("email"),
		Endpoint: c.alarmEmail.ValueAsString(),
	})
	sub.CfnOptions().SetCondition(awscdk.NewCfnCondition(c.stack, jsii.String("HasAlarmEmail"), &awscdk.CfnConditionProps{
		Expression: awscdk.Fn_ConditionNot(awscdk.Fn_ConditionEquals(c.alarmEmail.ValueAsString(), jsii.String(""))),
	}))

	notify := awscloudwatchactions.NewSnsAction(c.alarmTopic)
	for _, a := range c.alarmSpecs() {
		var metric awscloudwatch.IMetric
		if a.Math != nil {
			using := map[string]awscloudwatch.IMetric{}
			for id, m := range a.Math.Using {
				using[id] = m.metric()
			}
			metric = awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
				Expression:   jsii.String(a.Math.Expression),
				Label:        jsii.String(a.Math.Label),
				Period:       awscdk.Duration_Seconds(jsii.Number(a.Math.PeriodSec)),
				UsingMetrics: &using,
			})
		} else {
			metric = a.Metric.metric()
		}
		props := &awscloudwatch.AlarmProps{
			AlarmDescription:   jsii.String(a.Description),
			Metric:             metric,
			EvaluationPeriods:  jsii.Number(a.EvaluationPeriods),
			Threshold:          jsii.Number(a.Threshold),
			ComparisonOperator: a.Comparison,
			TreatMissingData:   a.TreatMissingData,
		}
		if a.DatapointsToAlarm > 0 {
			props.DatapointsToAlarm = jsii.Number(a.DatapointsToAlarm)
		}
		alarm := awscloudwatch.NewAlarm(c.stack, jsii.String(a.ID), props)
		alarm.AddAlarmAction(notify)
		alarm.AddOkAction(notify)
	}
}

const (
	gt = awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD
	lt = awscloudwatch.ComparisonOperator_LESS_THAN_THRESHOLD

	notBreaching = awscloudwatch.TreatMissingData_NOT_BREACHING
	breaching    = awscloudwatch.TreatMissingData_BREACHING
)

func crmsyncMetric(name, dimName, dimValue, statistic string, period float64) metricSpec {
	m := metricSpec{Namespace: "CrmSync", Name: name, Statistic: statistic, PeriodSec: period}
	if dimName != "" {
		m.Dimensions = map[string]*string{dimName: jsii.String(dimValue)}
	}
	return m
}

func (c *crmsync) alarmSpecs() []alarmSpec {
	worker := c.functions["WorkerFunction"].FunctionName()
	specs := []alarmSpec{
		{
			ID:          "DlqNotEmptyAlarm",
			Description: "Runbook: docs/runbooks/dlq-not-empty.md - events failed maxReceiveCount times and sit in the ingest DLQ; they are not applied to the CRM until redriven (crmsync dlq redrive).",
			Metric: metricSpec{Namespace: "AWS/SQS", Name: "ApproximateNumberOfMessagesVisible",
				Dimensions: map[string]*string{"QueueName": c.ingestDLQ.QueueName()}, Statistic: "Maximum", PeriodSec: 60},
			EvaluationPeriods: 1, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		{
			ID:          "IngestMessageAgeAlarm",
			Description: "Runbook: docs/runbooks/ingest-oldest-message-age.md - the oldest message on the ingest queue has waited more than 15 minutes for 3 minutes; events reach the CRM late (worker stalled, throttled or failing).",
			Metric: metricSpec{Namespace: "AWS/SQS", Name: "ApproximateAgeOfOldestMessage",
				Dimensions: map[string]*string{"QueueName": c.ingestQueue.QueueName()}, Statistic: "Maximum", PeriodSec: 60},
			EvaluationPeriods: 3, DatapointsToAlarm: 3, Threshold: 900, Comparison: gt, TreatMissingData: notBreaching,
		},
		{
			ID:          "WorkerErrorsAlarm",
			Description: "Runbook: docs/runbooks/worker-errors.md - the worker function failed invocations (panic, timeout, out of memory) in a 5-minute period; its whole batch returns to the queue.",
			Metric: metricSpec{Namespace: "AWS/Lambda", Name: "Errors",
				Dimensions: map[string]*string{"FunctionName": worker}, Statistic: "Sum", PeriodSec: 300},
			EvaluationPeriods: 1, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		{
			ID:          "WorkerThrottlesAlarm",
			Description: "Runbook: docs/runbooks/worker-throttles.md - the worker function was throttled (reserved concurrency 50 reached) in three 5-minute periods in a row; the queue backs up.",
			Metric: metricSpec{Namespace: "AWS/Lambda", Name: "Throttles",
				Dimensions: map[string]*string{"FunctionName": worker}, Statistic: "Sum", PeriodSec: 300},
			EvaluationPeriods: 3, DatapointsToAlarm: 3, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		{
			ID:          "RetryRateAlarm",
			Description: "Runbook: docs/runbooks/retry-rate.md - more than 5 % of the worker's message handlings were retries (transient failures plus transaction re-attempts) in two 5-minute periods in a row (at least 20 messages).",
			Math: &mathSpec{
				Expression: "IF(processed >= 20, 100 * (FILL(retried, 0) + FILL(reattempts, 0)) / processed, 0)",
				Label:      "Retry rate (%)",
				PeriodSec:  300,
				Using: map[string]metricSpec{
					"processed":  crmsyncMetric("Processed", "", "", "Sum", 300),
					"retried":    crmsyncMetric("Processed", "Outcome", "RETRY", "Sum", 300),
					"reattempts": crmsyncMetric("Retries", "", "", "Sum", 300),
				},
			},
			EvaluationPeriods: 2, DatapointsToAlarm: 2, Threshold: 5, Comparison: gt, TreatMissingData: notBreaching,
		},
	}
	for _, k := range connectors {
		specs = append(specs, alarmSpec{
			ID: "AuthFailures" + k.Name + "Alarm",
			Description: fmt.Sprintf("Runbook: docs/runbooks/auth-failures-%[1]s.md - the %[1]s webhook refused more than 5 deliveries as unauthenticated (bad signature, token or replay) in two 5-minute periods in a row; genuine %[1]s deliveries may be lost.",
				k.Source),
			Metric:            crmsyncMetric("AuthFailures", "Connector", k.Source, "Sum", 300),
			EvaluationPeriods: 2, DatapointsToAlarm: 2, Threshold: 5, Comparison: gt, TreatMissingData: notBreaching,
		})
	}
	for _, k := range connectors {
		a := alarmSpec{
			ID: "EnqueueFailures" + k.Name + "Alarm",
			Description: fmt.Sprintf("Runbook: docs/runbooks/enqueue-failures-%[1]s.md - the %[1]s webhook could not enqueue more than 2 deliveries in 5 minutes (SQS refused; the vendor got a 5xx).",
				k.Source),
			Metric:            crmsyncMetric("EnqueueFailures", "Connector", k.Source, "Sum", 300),
			EvaluationPeriods: 1, Threshold: 2, Comparison: gt, TreatMissingData: notBreaching,
		}
		if k.Source == "twilio" { // Twilio retries a callback only once
			a.Threshold = 0
			a.Description = "Runbook: docs/runbooks/enqueue-failures-twilio.md - the twilio webhook could not enqueue any delivery in 5 minutes (SQS refused; the vendor got a 5xx). Twilio retries a callback only once, so every failure risks a lost call update."
		}
		specs = append(specs, a)
	}
	return append(specs,
		alarmSpec{
			ID:                "QuarantinedAlarm",
			Description:       "Runbook: docs/runbooks/quarantined-payloads.md - an authentic delivery could not be parsed or mapped and was quarantined (any connector, 5 minutes); it is kept in S3 and not applied until released.",
			Metric:            crmsyncMetric("Quarantined", "", "", "Sum", 300),
			EvaluationPeriods: 1, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		alarmSpec{
			ID:                "HydrationFailuresAlarm",
			Description:       "Runbook: docs/runbooks/hydration-failures.md - the worker could not fetch a thin event's content from its vendor for a reason retrying cannot fix (expired token, missing permission, deleted object) and recorded it REJECTED (any connector, 5 minutes).",
			Metric:            crmsyncMetric("HydrationFailures", "", "", "Sum", 300),
			EvaluationPeriods: 1, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		alarmSpec{
			ID:                "SecretsStaleAlarm",
			Description:       "Runbook: docs/runbooks/secrets-stale.md - Secrets Manager failed to answer and a function served a cached connector secret past its TTL (any function, 5 minutes); after the grace period deliveries will be refused with 503.",
			Metric:            crmsyncMetric("SecretsStale", "", "", "Sum", 300),
			EvaluationPeriods: 1, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		alarmSpec{
			ID:                "DriftAboveSlaAlarm",
			Description:       "Runbook: docs/runbooks/drift-above-sla.md - the daily parity run found more than 0.1 % of the contacts changed in its window differing from their recomputation from the ledger (the SLA of config/reconcile.yaml).",
			Metric:            crmsyncMetric("DriftPercent", "Job", "parity", "Maximum", 86400),
			EvaluationPeriods: 1, Threshold: 0.1, Comparison: gt, TreatMissingData: notBreaching,
		},
		alarmSpec{
			ID:                "MissingEventsAlarm",
			Description:       "Runbook: docs/runbooks/missing-events.md - the daily parity run found vendor items (Twilio calls, Calendly invitees, Typeform responses) that were never delivered; it backfilled them, but the webhook path lost them.",
			Metric:            crmsyncMetric("MissingEvents", "Job", "parity", "Maximum", 86400),
			EvaluationPeriods: 1, Threshold: 0, Comparison: gt, TreatMissingData: notBreaching,
		},
		alarmSpec{
			ID:                "ParityHeartbeatAlarm",
			Description:       "Runbook: docs/runbooks/job-heartbeat-parity.md - the daily parity job has not finished a run for 26 hours (its JobHeartbeat is missing; missing data is breaching).",
			Metric:            crmsyncMetric("JobHeartbeat", "Job", "parity", "Sum", 3600),
			EvaluationPeriods: 26, DatapointsToAlarm: 26, Threshold: 1, Comparison: lt, TreatMissingData: breaching,
		},
		alarmSpec{
			ID:                "ConsistencyHeartbeatAlarm",
			Description:       "Runbook: docs/runbooks/job-heartbeat-consistency.md - the weekly consistency job has not finished a run for 7 days (its JobHeartbeat is missing; missing data is breaching).",
			Metric:            crmsyncMetric("JobHeartbeat", "Job", "consistency", "Sum", 86400),
			EvaluationPeriods: 7, DatapointsToAlarm: 7, Threshold: 1, Comparison: lt, TreatMissingData: breaching,
		},
		alarmSpec{
			ID:                "MappingReviewHeartbeatAlarm",
			Description:       "Runbook: docs/runbooks/job-heartbeat-mapping-review.md - the monthly mapping-review job has not run within 31 days plus grace. CloudWatch cannot evaluate a month (at most 7 days), so the daily parity run reports JobOverdue for it; missing data (parity not running) is breaching.",
			Metric:            crmsyncMetric("JobOverdue", "Job", "mapping-review", "Maximum", 3600),
			EvaluationPeriods: 26, DatapointsToAlarm: 26, Threshold: 0, Comparison: gt, TreatMissingData: breaching,
		},
		alarmSpec{
			ID:                "GraphSubscriptionsAlarm",
			Description:       "Runbook: docs/runbooks/graph-subscriptions.md - for two hours in a row a Microsoft Graph mail or calendar subscription was missing, failed its last create, renew, reauthorize or resync, or expired within 12 hours (GRAPH_ALARM_MARGIN_MINUTES), or the subscriptions function did not report (missing data is breaching); when a subscription lapses Graph stops notifying.",
			Metric:            crmsyncMetric("GraphSubscriptionsAtRisk", "", "", "Maximum", 3600),
			EvaluationPeriods: 2, DatapointsToAlarm: 2, Threshold: 0, Comparison: gt, TreatMissingData: breaching,
		},
	)
}
