package migrate_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/migrate"
	"github.com/crmsync/crmsync/tools/ddbfixture"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// v1Ledger provisions today's tables on moto and fills the ledger with the items v1 wrote.
func v1Ledger(t *testing.T) (*dynamodb.Client, string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	name := "mig" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 30 {
		name = name[:30]
	}
	tmpl, err := samtemplate.Load(filepath.Join("..", "..", "template.yaml"), samtemplate.Options{StackName: name, AccountID: localcloud.AccountID})
	if err != nil {
		t.Fatal(err)
	}
	st, err := localcloud.Provision(ctx, cfg, tmpl, localcloud.ProvisionOptions{StackName: name})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	fixture, err := ddbfixture.Read(filepath.Join("..", "..", "tools", "ddbfixture", "testdata", "tables-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	ddb, ledger := dynamodb.NewFromConfig(cfg), st.Physical["LedgerTable"].Ref
	if err := ddbfixture.Load(ctx, ddb, ledger, fixture["ledger"]); err != nil {
		t.Fatal(err)
	}
	return ddb, ledger
}

// expiring lists the ledger keys that carry expires_at, sorted.
func expiring(t *testing.T, ddb *dynamodb.Client, ledger string) []string {
	t.Helper()
	items, err := ddbfixture.Dump(context.Background(), ddb, ledger)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, it := range items {
		if _, ok := it["expires_at"]; ok {
			keys = append(keys, it["pk"].(map[string]any)["S"].(string))
		}
	}
	return keys
}

// The v1 worker gave Typeform's ledger items (dedup window forever) a 400-day TTL: a dry run
// finds them and writes nothing, the run that applies removes the TTL from them alone, and a
// second run has nothing to do.
func TestForeverTTL(t *testing.T) {
	ddb, ledger := v1Ledger(t)
	ctx := context.Background()
	before := expiring(t, ddb, ledger)
	if len(before) != 6 {
		t.Fatalf("v1 fixture: %d ledger items expire, want all 6: %v", len(before), before)
	}
	dry, err := migrate.ForeverTTL(ctx, ddb, migrate.Options{LedgerTable: ledger})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *dry, (migrate.Report{Step: migrate.StepForeverTTL, DryRun: true, Scanned: 6, Matched: 2,
		Examples: dry.Examples}); !cmp.Equal(got, want) || len(dry.Examples) != 2 {
		t.Fatalf("dry run = %+v", got)
	}
	if got := expiring(t, ddb, ledger); !cmp.Equal(got, before) {
		t.Fatalf("a dry run wrote: expiring %v, was %v", got, before)
	}
	applied, err := migrate.ForeverTTL(ctx, ddb, migrate.Options{LedgerTable: ledger, Apply: true})
	if err != nil {
		t.Fatal(err)
	}
	if applied.Matched != 2 || applied.Changed != 2 || applied.Skipped != 0 || applied.Next != "" {
		t.Fatalf("applied = %+v", applied)
	}
	want := []string{"crm:acct-1", "mailgun:ev-zoe", "twilio:call:CA1:1", "twilio:call:CA1:2"} // the windowed sources keep theirs
	if got := expiring(t, ddb, ledger); !cmp.Equal(got, want) {
		t.Errorf("expiring after the migration = %v, want %v", got, want)
	}
	again, err := migrate.ForeverTTL(ctx, ddb, migrate.Options{LedgerTable: ledger, Apply: true})
	if err != nil || again.Matched != 0 || again.Changed != 0 {
		t.Errorf("second run = %+v, %v; want nothing to do", again, err)
	}
}

// A run cut short returns where to continue; continuing from it, page by page, changes every
// matched item exactly once.
func TestForeverTTLResumes(t *testing.T) {
	ddb, ledger := v1Ledger(t)
	ctx := context.Background()
	opts := migrate.Options{LedgerTable: ledger, Apply: true, PageSize: 1, MaxPages: 2}
	changed, runs := 0, 0
	for {
		rep, err := migrate.ForeverTTL(ctx, ddb, opts)
		if err != nil {
			t.Fatal(err)
		}
		runs++
		changed += rep.Changed
		if rep.Next == "" {
			break
		}
		if runs > 10 {
			t.Fatalf("no end after %d runs: %+v", runs, rep)
		}
		opts.From = rep.Next
	}
	if changed != 2 || runs < 3 {
		t.Errorf("changed %d items in %d runs, want 2 in at least 3 (six items, two per run)", changed, runs)
	}
	if got := expiring(t, ddb, ledger); len(got) != 4 {
		t.Errorf("expiring after the resumed runs = %v", got)
	}
}

// A matched item whose mark changes between the scan and the write is skipped, not rewritten.
func TestForeverTTLSkipsAnItemThatChanged(t *testing.T) {
	ddb, ledger := v1Ledger(t)
	ctx := context.Background()
	racing := &unmarkFirst{Client: ddb, ledger: ledger}
	rep, err := migrate.ForeverTTL(ctx, racing, migrate.Options{LedgerTable: ledger, Apply: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Matched != 2 || rep.Changed != 1 || rep.Skipped != 1 {
		t.Errorf("report = %+v, want 2 matched, 1 changed, 1 skipped", rep)
	}
}

// unmarkFirst clears the dedup_forever mark of the first item the migration updates, just
// before the update reaches the table (another writer's change between scan and write).
type unmarkFirst struct {
	*dynamodb.Client
	ledger string
	done   bool
}

func (u *unmarkFirst) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if !u.done {
		u.done = true
		if _, err := u.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(u.ledger), Key: in.Key,
			UpdateExpression:          aws.String("SET dedup_forever = :f"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":f": &types.AttributeValueMemberBOOL{Value: false}}}); err != nil {
			return nil, err
		}
	}
	return u.Client.UpdateItem(ctx, in, o...)
}
