// Package awsclient owns how every crmsync process builds its AWS configuration: the default
// credential chain in AWS, or the local stack's endpoint (CRMSYNC_AWS_ENDPOINT) with dummy
// credentials when running against moto. It makes no AWS calls.
package awsclient

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// EndpointEnv names the environment variable that points every AWS client at a local endpoint.
const EndpointEnv = "CRMSYNC_AWS_ENDPOINT"

// DefaultLocalEndpoint is where the local stack expects moto.
const DefaultLocalEndpoint = "http://127.0.0.1:4566"

// LocalRegion is the region used against the local endpoint when none is configured.
const LocalRegion = "us-east-1"

// Load returns an aws.Config from the default chain; when endpoint is non-empty every service
// client built from it talks to that endpoint with static test credentials.
func Load(ctx context.Context, endpoint string, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts := append([]func(*config.LoadOptions) error{}, optFns...)
	if endpoint != "" {
		opts = append(opts,
			config.WithBaseEndpoint(endpoint),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
		)
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load aws config: %w", err)
	}
	if endpoint != "" && cfg.Region == "" {
		cfg.Region = LocalRegion
	}
	return cfg, nil
}

// ErrNoLambdaCredentials reports a function started without the credentials Lambda puts in its
// environment.
var ErrNoLambdaCredentials = errors.New("no credentials in the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (Lambda sets them from the execution role)")

// ForLambda returns the configuration a Lambda function runs with, and links nothing more: the
// region and the execution role's credentials that Lambda puts in the function's environment, read
// by the SDK's own environment reader (config.NewEnvConfig). LoadDefaultConfig's chain (shared
// files, SSO, web identity, container and instance metadata providers) is never used by a Lambda
// function and is not linked into its binary. With CRMSYNC_AWS_ENDPOINT set (the local stack,
// aws-lambda-rie runs), every client talks to that endpoint with static test credentials.
func ForLambda() (aws.Config, error) {
	env, err := config.NewEnvConfig()
	if err != nil {
		return aws.Config{}, fmt.Errorf("read aws environment: %w", err)
	}
	cfg := aws.Config{Region: env.Region}
	if endpoint := os.Getenv(EndpointEnv); endpoint != "" {
		cfg.BaseEndpoint = aws.String(endpoint)
		cfg.Credentials = credentials.NewStaticCredentialsProvider("test", "test", "")
		if cfg.Region == "" {
			cfg.Region = LocalRegion
		}
		return cfg, nil
	}
	if !env.Credentials.HasKeys() {
		return aws.Config{}, ErrNoLambdaCredentials
	}
	cfg.Credentials = credentials.StaticCredentialsProvider{Value: env.Credentials}
	return cfg, nil
}

// FromEnv is Load with the endpoint taken from getenv(EndpointEnv).
func FromEnv(ctx context.Context, getenv func(string) string) (aws.Config, error) {
	return Load(ctx, getenv(EndpointEnv))
}
