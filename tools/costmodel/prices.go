package costmodel

// Published AWS prices, us-east-1, on-demand, without free tiers. This file is the one place
// crmsync keeps prices: `crmsync-dev bench` multiplies counted usage by them.
//
// Each price names its source page and the date it took effect (as published there). They were
// transcribed from those pages; `make bench` does not fetch them (the benchmark runs offline), so
// re-check the pages before quoting a figure: PricesTranscribed says when they were last checked.

// PricesTranscribed says when the prices below were taken from their source pages.
const PricesTranscribed = "2025 price pages (us-east-1), not re-fetched when the benchmark runs"

// Price is one published price.
type Price struct {
	// USD is the price of Per units.
	USD float64
	// Per is how many units USD buys (1e6 for "per million requests").
	Per float64
	// Unit names what USD buys, e.g. "1M requests".
	Unit string
	// Since is when the price took effect, where the page says so ("" when it does not).
	Since string
	// Source is the pricing page.
	Source string
}

var (
	// LambdaRequests: AWS Lambda, $0.20 per 1M requests (all architectures).
	LambdaRequests = Price{0.20, 1e6, "1M requests", "", "https://aws.amazon.com/lambda/pricing/"}
	// LambdaARMGBSecond: AWS Lambda on arm64 (Graviton2), $0.0000133334 per GB-second (first
	// 7.5 billion GB-seconds a month).
	LambdaARMGBSecond = Price{0.0000133334, 1, "GB-second", "2021-09-29", "https://aws.amazon.com/lambda/pricing/"}
	// HTTPAPIRequests: Amazon API Gateway HTTP API, $1.00 per 1M requests (first 300M a month),
	// each request metered in 512 KB increments.
	HTTPAPIRequests = Price{1.00, 1e6, "1M requests", "2020-03-12", "https://aws.amazon.com/api-gateway/pricing/"}
	// SQSFIFORequests: Amazon SQS FIFO queues, $0.50 per 1M requests (first 100B a month); every
	// 64 KB chunk of a payload is billed as one request.
	SQSFIFORequests = Price{0.50, 1e6, "1M requests", "2016-11-17", "https://aws.amazon.com/sqs/pricing/"}
	// DynamoDBWriteRequestUnits: Amazon DynamoDB on-demand (Standard table class), $0.625 per 1M
	// write request units.
	DynamoDBWriteRequestUnits = Price{0.625, 1e6, "1M write request units", "2024-11-01", "https://aws.amazon.com/dynamodb/pricing/on-demand/"}
	// DynamoDBReadRequestUnits: Amazon DynamoDB on-demand (Standard table class), $0.125 per 1M
	// read request units.
	DynamoDBReadRequestUnits = Price{0.125, 1e6, "1M read request units", "2024-11-01", "https://aws.amazon.com/dynamodb/pricing/on-demand/"}
	// DynamoDBStorage: Amazon DynamoDB (Standard table class), $0.25 per GB-month of data stored
	// beyond the first 25 GB (tables and global secondary indexes; each item metered at its size
	// plus 100 bytes).
	DynamoDBStorage = Price{0.25, 1, "GB-month", "", "https://aws.amazon.com/dynamodb/pricing/on-demand/"}
	// DynamoDBPITR: Amazon DynamoDB continuous backups (point-in-time recovery), $0.20 per
	// GB-month of table size (base table data, not global secondary indexes).
	DynamoDBPITR = Price{0.20, 1, "GB-month", "", "https://aws.amazon.com/dynamodb/pricing/on-demand/"}
	// SecretsManagerAPICalls: AWS Secrets Manager, $0.05 per 10,000 API calls.
	SecretsManagerAPICalls = Price{0.05, 1e4, "10K API calls", "2018-04-04", "https://aws.amazon.com/secrets-manager/pricing/"}
	// SecretsManagerSecretMonth: AWS Secrets Manager, $0.40 per secret per month.
	SecretsManagerSecretMonth = Price{0.40, 1, "secret-month", "2018-04-04", "https://aws.amazon.com/secrets-manager/pricing/"}
	// CloudWatchLogsIngestion: Amazon CloudWatch Logs, $0.50 per GB ingested (Standard class;
	// Lambda's logs are "vended" logs, $0.50 per GB for the first 10 TB a month).
	CloudWatchLogsIngestion = Price{0.50, 1, "GB ingested", "2024-05-01", "https://aws.amazon.com/cloudwatch/pricing/"}
	// CloudWatchCustomMetric: Amazon CloudWatch, $0.30 per custom metric per month (first 10,000
	// metrics); each EMF metric name and dimension set is one metric.
	CloudWatchCustomMetric = Price{0.30, 1, "metric-month", "", "https://aws.amazon.com/cloudwatch/pricing/"}
	// S3PutRequests: Amazon S3 Standard, $0.005 per 1,000 PUT requests (quarantine only).
	S3PutRequests = Price{0.005, 1e3, "1K PUT requests", "", "https://aws.amazon.com/s3/pricing/"}
)

// AllPrices lists every price with a name, for the report.
func AllPrices() []struct {
	Name  string
	Price Price
} {
	return []struct {
		Name  string
		Price Price
	}{
		{"Lambda requests", LambdaRequests},
		{"Lambda arm64 compute", LambdaARMGBSecond},
		{"API Gateway HTTP API", HTTPAPIRequests},
		{"SQS FIFO requests", SQSFIFORequests},
		{"DynamoDB on-demand writes", DynamoDBWriteRequestUnits},
		{"DynamoDB on-demand reads", DynamoDBReadRequestUnits},
		{"DynamoDB storage", DynamoDBStorage},
		{"DynamoDB point-in-time recovery", DynamoDBPITR},
		{"Secrets Manager API calls", SecretsManagerAPICalls},
		{"Secrets Manager secrets", SecretsManagerSecretMonth},
		{"CloudWatch Logs ingestion", CloudWatchLogsIngestion},
		{"CloudWatch custom metrics", CloudWatchCustomMetric},
		{"S3 PUT requests", S3PutRequests},
	}
}
