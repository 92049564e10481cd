// Package wiring owns what every crmsync Lambda function shares in how it is started: the
// environment it is built from (Env), configuration errors that name the variable at fault, and
// Main, the whole body of a function's main. Each function kind's own wiring lives in a
// subpackage (wiring/webhook, wiring/worker, wiring/reconcile, wiring/crmchanges), so a
// function's binary links only what its kind runs. Nothing here calls AWS.
package wiring

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/secrets"
)

// Env is what a function is built from.
type Env struct {
	Getenv func(string) string
	AWS    aws.Config
	Log    *slog.Logger
	Stdout io.Writer // where EMF metric lines go
	Now    func() time.Time
}

// Clock returns the environment's clock, time.Now when none was given.
func (e Env) Clock() func() time.Time {
	if e.Now != nil {
		return e.Now
	}
	return time.Now
}

// ConfigError names the environment variable that is missing or malformed.
type ConfigError struct {
	Var, Problem string
}

func (e *ConfigError) Error() string { return "environment " + e.Var + ": " + e.Problem }

// Required returns the named variables' trimmed values, or a ConfigError naming the first that is
// unset or blank.
func Required(getenv func(string) string, names ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		v := strings.TrimSpace(getenv(n))
		if v == "" {
			return nil, &ConfigError{Var: n, Problem: "required, not set"}
		}
		out[n] = v
	}
	return out, nil
}

// PositiveInt returns the named variable as a positive integer, def when it is unset, or a
// ConfigError when it is not a positive integer.
func PositiveInt(getenv func(string) string, name string, def int64) (int64, error) {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, &ConfigError{Var: name, Problem: fmt.Sprintf("want a positive integer, got %q", v)}
	}
	return n, nil
}

// List returns the named variable split on commas, each element trimmed, blanks dropped.
func List(getenv func(string) string, name string) []string {
	var out []string
	for _, s := range strings.Split(getenv(name), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// SecretsStaleMetric counts uses of a cached secret past its TTL because Secrets Manager failed
// (SecretsStaleAlarm watches its rollup).
const SecretsStaleMetric = "SecretsStale"

// StaleSecrets returns the secrets cache option every function uses: on a Secrets Manager error a
// cached secret is served for SECRET_GRACE_SECONDS (default one hour) past its TTL, and each such
// use is logged (the secret's id, never its value) and counted as SecretsStale under dims.
func StaleSecrets(env Env, dims map[string]string) (secrets.Option, error) {
	grace, err := PositiveInt(env.Getenv, "SECRET_GRACE_SECONDS", 3600)
	if err != nil {
		return nil, err
	}
	metrics := emf.New(env.Stdout, env.Clock())
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return secrets.StaleOnError(time.Duration(grace)*time.Second, func(id string, age time.Duration, err error) {
		log.Warn("secret served stale", "secret_id", id, "age_seconds", int(age.Seconds()), "error", err.Error())
		metrics.Emit(dims, emf.Metric{Name: SecretsStaleMetric, Value: 1, Unit: emf.Count})
	}), nil
}

// LoadPolicy returns the policy at path, or the one embedded at build when path is empty.
func LoadPolicy(path string) (*policy.Policy, error) {
	if strings.TrimSpace(path) != "" {
		return policy.Load(path)
	}
	return policy.Parse("config/policy.yaml (embedded)", config.PolicyYAML)
}

// PolicyFromEnv is LoadPolicy of POLICY_PATH, its error a ConfigError naming the variable.
func PolicyFromEnv(getenv func(string) string) (*policy.Policy, error) {
	pol, err := LoadPolicy(getenv("POLICY_PATH"))
	if err != nil {
		return nil, &ConfigError{Var: "POLICY_PATH", Problem: err.Error()}
	}
	return pol, nil
}
