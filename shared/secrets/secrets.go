// Package secrets owns reading connector secrets from Secrets Manager: JSON holding the current and
// the previous value (so a rotation needs no downtime), cached for a short TTL so a warm function
// does not call Secrets Manager on every request. Secret values are never logged.
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

	mu      sync.Mutex
	entries map[string]entry
}

type entry struct {
	sec     connector.Secret
	fetched time.Time
}

// New returns a cache. ttl <= 0 means 5 minutes; now defaults to time.Now.
func New(api API, ttl time.Duration, now func() time.Time) *Cache {
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Cache{api: api, ttl: ttl, now: now, entries: map[string]entry{}}
}

// Get returns the secret with the given id (name or ARN), from the cache while fresh.
func (c *Cache) Get(ctx context.Context, id string) (connector.Secret, error) {
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if ok && c.now().Sub(e.fetched) < c.ttl {
		return e.sec, nil
	}
	out, err := c.api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
	if err != nil {
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
