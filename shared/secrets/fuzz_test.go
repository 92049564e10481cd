package secrets

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

type fuzzAPI string

func (f fuzzAPI) GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	return &secretsmanager.GetSecretValueOutput{SecretString: aws.String(string(f))}, nil
}

// Whatever Secrets Manager holds, reading it returns a secret or an error, never a panic.
func FuzzGet(f *testing.F) {
	f.Add(`{"current":{"signing_key":"k"},"previous":{"signing_key":"p"}}`)
	f.Add(`{"current":null}`)
	f.Add(`{"current":{"k":1}}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, value string) {
		c := New(fuzzAPI(value), time.Minute, nil)
		sec, err := c.Get(context.Background(), "id")
		if err == nil {
			_ = sec.Values("signing_key")
		}
	})
}
