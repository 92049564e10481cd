package costmodel

import "math"

// LambdaUse is one function's measured invocations and compute time.
type LambdaUse struct {
	Function    string
	MemoryMB    int
	Invocations int
	// BilledMs sums every invocation's duration rounded up to the millisecond (Lambda's billing
	// granularity).
	BilledMs float64
}

// GBSeconds is the compute Lambda bills for the use.
func (l LambdaUse) GBSeconds() float64 { return l.BilledMs / 1000 * float64(l.MemoryMB) / 1024 }

// BilledMs rounds a duration in milliseconds up as Lambda bills it (1 ms granularity).
func BilledMs(ms float64) float64 { return math.Max(1, math.Ceil(ms)) }

// Workload is what a number of events used, as measured.
type Workload struct {
	// Events is the number of events the usage is for.
	Events int
	// HTTPRequests is the API Gateway requests (webhook deliveries; each under 512 KB).
	HTTPRequests int
	// Lambda is each function's invocations and compute.
	Lambda []LambdaUse
	// AWS is the counted AWS usage.
	AWS Usage
	// LogBytes is what the functions wrote to their logs (application logs and EMF metrics).
	LogBytes int64
	// Storage is what the events added to each table, weighed by how long it stays (see
	// Counter.Storage), with whether the table has point-in-time recovery.
	Storage []TableStorage
}

// TableStorage is one table's share of a workload's storage.
type TableStorage struct {
	Table  string
	Stored Stored
	// PITR is set when the table has point-in-time recovery (billed on the table's size).
	PITR bool
}

// Line is one billed driver's cost per million events.
type Line struct {
	Service string
	Driver  string
	// PerEvent is the driver's quantity per event, in Unit.
	PerEvent float64
	Unit     string
	// USDPerMillion is the cost of a million events.
	USDPerMillion float64
	Price         Price
}

func line(service, driver, unit string, perEvent float64, p Price) Line {
	return Line{Service: service, Driver: driver, PerEvent: perEvent, Unit: unit, USDPerMillion: perEvent * 1e6 * p.USD / p.Per, Price: p}
}

// PerMillion prices a workload: the cost of a million events like it, by service and driver.
func PerMillion(w Workload) []Line {
	if w.Events == 0 {
		return nil
	}
	n := float64(w.Events)
	inv, gbs := 0, 0.0
	for _, l := range w.Lambda {
		inv += l.Invocations
		gbs += l.GBSeconds()
	}
	u := w.AWS
	const gb = 1 << 30
	var byteMonths, pitrByteMonths float64
	for _, t := range w.Storage {
		byteMonths += t.Stored.ByteMonths + t.Stored.IndexByteMonths
		if t.PITR {
			pitrByteMonths += t.Stored.ByteMonths
		}
	}
	return []Line{
		line("API Gateway", "HTTP API requests", "requests", float64(w.HTTPRequests)/n, HTTPAPIRequests),
		line("Lambda", "invocations", "requests", float64(inv)/n, LambdaRequests),
		line("Lambda", "arm64 compute", "GB-s", gbs/n, LambdaARMGBSecond),
		line("SQS", "FIFO requests (64 KB chunks)", "requests", u.SQSRequests/n, SQSFIFORequests),
		line("DynamoDB", "write request units (tables + indexes)", "WRU", u.DynamoDB.WriteTotal()/n, DynamoDBWriteRequestUnits),
		line("DynamoDB", "read request units", "RRU", u.DynamoDB.Read/n, DynamoDBReadRequestUnits),
		line("DynamoDB", "storage, tables + indexes (for as long as kept)", "GB-month", byteMonths/n/gb, DynamoDBStorage),
		line("DynamoDB", "point-in-time recovery (table size, as long as kept)", "GB-month", pitrByteMonths/n/gb, DynamoDBPITR),
		line("Secrets Manager", "GetSecretValue calls", "calls", float64(u.ServiceCalls("Secrets Manager"))/n, SecretsManagerAPICalls),
		line("CloudWatch Logs", "log bytes ingested", "GB", float64(w.LogBytes)/n/(1<<30), CloudWatchLogsIngestion),
		line("S3", "PutObject (quarantine)", "requests", float64(u.Count("S3", "PutObject"))/n, S3PutRequests),
	}
}

// Total sums the lines' cost per million events.
func Total(lines []Line) float64 {
	t := 0.0
	for _, l := range lines {
		t += l.USDPerMillion
	}
	return t
}
