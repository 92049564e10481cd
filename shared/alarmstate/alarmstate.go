// Package alarmstate owns how an alarm's state reads to an operator: the CloudWatch states, one
// alarm's status as `crmsync status` shows it (from CloudWatch in AWS, from the local stack's
// evaluator locally), and the runbook an alarm's description names. It calls nothing.
package alarmstate

import (
	"regexp"
	"time"
)

// RunbookDir is where runbooks live, relative to the repository root.
const RunbookDir = "docs/runbooks"

var runbookRE = regexp.MustCompile(`docs/runbooks/([a-z0-9][a-z0-9-]*)\.md`)

// RunbookOf returns the runbook path an alarm description names and its name (the file's base
// name without .md); both empty when it names none.
func RunbookOf(description string) (path, name string) {
	m := runbookRE.FindStringSubmatch(description)
	if m == nil {
		return "", ""
	}
	return m[0], m[1]
}

// State is an alarm state.
type State string

// The alarm states.
const (
	OK               State = "OK"
	Alarming         State = "ALARM"
	InsufficientData State = "INSUFFICIENT_DATA"
)

// Status is one alarm's current state as `crmsync status` shows it (GET /_local/alarms locally).
type Status struct {
	// Name is the alarm's name (its runbook's name).
	Name string `json:"name"`
	// LogicalID is the template's logical id.
	LogicalID string `json:"logical_id"`
	// State is OK, ALARM or INSUFFICIENT_DATA.
	State State `json:"state"`
	// Reason explains the state (values of the evaluated periods).
	Reason string `json:"reason"`
	// Runbook is the runbook's path (docs/runbooks/<name>.md).
	Runbook string `json:"runbook"`
	// Since is when the alarm entered its state.
	Since time.Time `json:"since"`
	// Value is the latest period's value, when it had one.
	Value *float64 `json:"value,omitempty"`
	// Condition describes what is compared, e.g. "AWS/SQS/ApproximateNumberOfMessagesVisible{...}
	// Maximum/1m0s > 0 for 1 of 1 periods".
	Condition string `json:"condition"`
	// Period is the evaluated period as evaluated (scaled locally).
	Period string `json:"period"`
}
