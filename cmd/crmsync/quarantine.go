package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/secrets"
)

// releasedPrefix is where released quarantined payloads are kept, for the record.
const releasedPrefix = "released/"

// quarantineItem is the JSON shape of `quarantine list` rows.
type quarantineItem struct {
	ID         string    `json:"id"` // the object key under quarantine/
	Connector  string    `json:"connector"`
	Size       int64     `json:"size"`
	ReceivedAt time.Time `json:"received_at"`
}

func s3For(ref *stackRef) *s3.Client {
	return s3.NewFromConfig(ref.AWS, func(o *s3.Options) { o.UsePathStyle = ref.Local })
}

// listQuarantine lists every quarantined payload, sorted by id.
func listQuarantine(ctx context.Context, ref *stackRef) ([]quarantineItem, error) {
	if err := ref.require("QuarantineBucket"); err != nil {
		return nil, err
	}
	pages := s3.NewListObjectsV2Paginator(s3For(ref), &s3.ListObjectsV2Input{Bucket: aws.String(ref.QuarantineBucket), Prefix: aws.String(ingest.QuarantinePrefix)})
	out := []quarantineItem{}
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list quarantine: %w", err)
		}
		for _, object := range page.Contents {
			key := aws.ToString(object.Key)
			parts := strings.SplitN(strings.TrimPrefix(key, ingest.QuarantinePrefix), "/", 2)
			out = append(out, quarantineItem{ID: key, Connector: parts[0], Size: aws.ToInt64(object.Size), ReceivedAt: aws.ToTime(object.LastModified)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// getQuarantined reads one quarantined delivery by id (its object key under quarantine/).
func getQuarantined(ctx context.Context, ref *stackRef, id string) (*ingest.Quarantined, error) {
	if !strings.HasPrefix(id, ingest.QuarantinePrefix) {
		return nil, fmt.Errorf("%q is not a quarantine id (they start with %s; see `crmsync quarantine list`)", id, ingest.QuarantinePrefix)
	}
	object, err := s3For(ref).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(ref.QuarantineBucket), Key: aws.String(id)})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", id, err)
	}
	defer object.Body.Close()
	body, err := io.ReadAll(object.Body)
	if err != nil {
		return nil, err
	}
	var quarantined ingest.Quarantined
	if err := json.Unmarshal(body, &quarantined); err != nil {
		return nil, fmt.Errorf("%s is not a quarantined delivery: %w", id, err)
	}
	return &quarantined, nil
}

// newQuarantineCmd returns `crmsync quarantine` with its list, show and release subcommands.
func newQuarantineCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "quarantine", Short: "Inspect quarantined payloads and re-run one after a mapping fix"}
	cmd.AddCommand(newQuarantineListCmd(), newQuarantineShowCmd(), newQuarantineReleaseCmd())
	return cmd
}

// newQuarantineListCmd returns `crmsync quarantine list`: every quarantined payload, as a table
// or as JSON.
func newQuarantineListCmd() *cobra.Command {
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List quarantined payloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			items, err := listQuarantine(cmd.Context(), ref)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), items)
			}
			table := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(table, "ID\tCONNECTOR\tBYTES\tSTORED")
			for _, item := range items {
				fmt.Fprintf(table, "%s\t%s\t%d\t%s\n", item.ID, item.Connector, item.Size, item.ReceivedAt.Format(time.RFC3339))
			}
			return table.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print [{id, connector, size, received_at}]")
	return list
}

// newQuarantineShowCmd returns `crmsync quarantine show <id>`: one quarantined delivery as JSON.
func newQuarantineShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show <id>",
		Short: "Show one quarantined payload: connector, reason, request metadata and body",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			quarantined, err := getQuarantined(cmd.Context(), ref, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"id": args[0], "connector": quarantined.Connector, "reason": quarantined.Reason,
				"received_at": quarantined.ReceivedAt, "method": quarantined.Method, "path": quarantined.Path, "headers": quarantined.Headers, "body": string(quarantined.Body)})
		},
	}
}

// newQuarantineReleaseCmd returns `crmsync quarantine release <id>`: parse one quarantined
// delivery again, enqueue its events and move it to released/.
func newQuarantineReleaseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "release <id>",
		Short: "Re-run a quarantined payload through its connector (after a mapping fix) and enqueue its events",
		Long: `Release parses the stored delivery again with the connector's current mapping and enqueues its
events through the ingest queue, so the ledger, policy and deduplication apply as usual. The
delivery was authenticated when it arrived; its signature is not checked again (timestamped
signatures would have expired). On success the object moves to released/ in the same bucket.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			if err := ref.require("IngestQueue"); err != nil {
				return err
			}
			return releaseQuarantined(cmd.Context(), ref, args[0], cmd.OutOrStdout())
		},
	}
}

// releaseQuarantined parses the quarantined delivery id again, enqueues its events on the
// ingest queue and moves it to released/, reporting the release on out.
func releaseQuarantined(ctx context.Context, ref *stackRef, id string, out io.Writer) error {
	quarantined, err := getQuarantined(ctx, ref, id)
	if err != nil {
		return err
	}
	events, err := reparseQuarantined(ctx, ref, id, quarantined)
	if err != nil {
		return err
	}
	if err := ingest.Enqueue(ctx, sqs.NewFromConfig(ref.AWS), ref.IngestQueueURL, events); err != nil {
		return err
	}
	dest, err := moveToReleased(ctx, ref, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "released %s: %d event(s) enqueued; kept as %s\n", id, len(events), dest)
	return nil
}

// reparseQuarantined parses a quarantined delivery with its connector's current mapping, without
// verifying its signature again, and returns its events, validated and received now.
func reparseQuarantined(ctx context.Context, ref *stackRef, id string, quarantined *ingest.Quarantined) ([]canonical.Event, error) {
	conn, err := registry.New(quarantined.Connector)
	if err != nil {
		return nil, err
	}
	secret := connectorSecret(ctx, ref, quarantined.Connector)
	now := time.Now()
	req := &connector.Request{Method: quarantined.Method, Path: quarantined.Path, Headers: quarantined.Headers, RawQuery: quarantined.RawQuery, Body: quarantined.Body,
		PublicURL: quarantined.PublicURL, ReceivedAt: quarantined.ReceivedAt}
	parsed, err := conn.Parse(req, secret)
	if err != nil {
		return nil, fmt.Errorf("%s still does not parse (fix the mapping first): %w", id, err)
	}
	for i := range parsed.Events {
		parsed.Events[i].ReceivedAt = now
		if err := parsed.Events[i].Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
	}
	return parsed.Events, nil
}

// connectorSecret returns the connector's current secret from the stack, or the zero secret when
// the stack has none for it or it cannot be read. Graph keeps only items whose clientState
// matches: it needs the secret to parse.
func connectorSecret(ctx context.Context, ref *stackRef, connectorName string) connector.Secret {
	var secret connector.Secret
	if resource, ok := ref.Resources[secretLogicalID(connectorName)]; ok {
		if value, err := secrets.New(secretsManagerFor(ref), time.Minute, nil).Get(ctx, resource.Ref); err == nil {
			secret = value
		}
	}
	return secret
}

// moveToReleased copies a released delivery to released/ in the quarantine bucket, removes it
// from quarantine, and returns its new key.
func moveToReleased(ctx context.Context, ref *stackRef, id string) (string, error) {
	dest := releasedPrefix + strings.TrimPrefix(id, ingest.QuarantinePrefix)
	client := s3For(ref)
	if _, err := client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(ref.QuarantineBucket), Key: aws.String(dest),
		CopySource: aws.String(ref.QuarantineBucket + "/" + id)}); err != nil {
		return "", fmt.Errorf("events enqueued, but keeping %s as released failed: %w", id, err)
	}
	if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(ref.QuarantineBucket), Key: aws.String(id)}); err != nil {
		return "", fmt.Errorf("events enqueued, but removing %s from quarantine failed: %w", id, err)
	}
	return dest, nil
}

// secretLogicalID maps a connector to its secret's logical id in the template.
func secretLogicalID(connectorName string) string {
	var b strings.Builder
	for _, part := range strings.Split(connectorName, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String() + "Secret"
}

func secretsManagerFor(ref *stackRef) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(ref.AWS)
}
