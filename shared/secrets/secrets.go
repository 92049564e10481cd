// Package secrets owns reading connector secrets from Secrets Manager: JSON holding the current and
// the previous value (so a rotation needs no downtime), cached for a short TTL so a warm function
// does not call Secrets Manager on every request. When a refresh fails, a cached value may be served
// for a bounded grace period (StaleOnError), so a Secrets Manager blip is not an outage of every
// webhook. Secret values are never logged.
package secrets

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/shared/connector"
)

// API is the Secrets Manager call this package makes.
type API interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// Cache reads secrets through API and keeps each for TTL.
type Cache struct {
	api API
	ttl time.Duration
	now func() time.Time

	grace   time.Duration
	onStale func(id string, age time.Duration, err error)

	mu      sync.Mutex
	entries map[string]entry
}

// Option configures a Cache.
type Option func(*Cache)

// StaleOnError makes a failed refresh serve the cached value while it is younger than the TTL
// plus grace, calling onStale (which should count a metric that alarms) each time it does; past
// that, or with nothing cached, the error is returned. Without this option a failed refresh is an
// error at once.
func StaleOnError(grace time.Duration, onStale func(id string, age time.Duration, err error)) Option {
	return func(c *Cache) { c.grace, c.onStale = grace, onStale }
}

type entry struct {
	sec     connector.Secret
	fetched time.Time
}

// New returns a cache. ttl <= 0 means 5 minutes; now defaults to time.Now.
func New(api API, ttl time.Duration, now func() time.Time, opts ...Option) *Cache {
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	c := &Cache{api: api, ttl: ttl, now: now, entries: map[string]entry{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Get returns the secret with the given id (name or ARN), from the cache while fresh.
func (c *Cache) Get(ctx context.Context, id string) (connector.Secret, error) {
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	age := c.now().Sub(e.fetched)
	if ok && age < c.ttl {
		return e.sec, nil
	}
	out, err := c.api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
	if err != nil {
		if ok && c.onStale != nil && age < c.ttl+c.grace {
			c.onStale(id, age, err)
			return e.sec, nil
		}
		return connector.Secret{}, fmt.Errorf("get secret: %w", err)
	}
	var sec connector.Secret
	if err := json.Unmarshal([]byte(aws.ToString(out.SecretString)), &sec); err != nil {
		// Never echo the value: it may be a secret in the wrong shape.
		return connector.Secret{}, fmt.Errorf("secret is not {\"current\":{...},\"previous\":{...}} JSON")
	}
	c.mu.Lock()
	c.entries[id] = entry{sec: sec, fetched: c.now()}
	c.mu.Unlock()
	return sec, nil
}
