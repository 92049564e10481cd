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

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/secrets"
)

// ReleasedPrefix is where released quarantined payloads are kept, for the record.
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

func listQuarantine(ctx context.Context, ref *stackRef) ([]quarantineItem, error) {
	if err := ref.require("QuarantineBucket"); err != nil {
		return nil, err
	}
	p := s3.NewListObjectsV2Paginator(s3For(ref), &s3.ListObjectsV2Input{Bucket: aws.String(ref.QuarantineBucket), Prefix: aws.String(ingest.QuarantinePrefix)})
	out := []quarantineItem{}
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list quarantine: %w", err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			parts := strings.SplitN(strings.TrimPrefix(key, ingest.QuarantinePrefix), "/", 2)
			out = append(out, quarantineItem{ID: key, Connector: parts[0], Size: aws.ToInt64(o.Size), ReceivedAt: aws.ToTime(o.LastModified)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func getQuarantined(ctx context.Context, ref *stackRef, id string) (*ingest.Quarantined, error) {
	if !strings.HasPrefix(id, ingest.QuarantinePrefix) {
		return nil, fmt.Errorf("%q is not a quarantine id (they start with %s; see `crmsync quarantine list`)", id, ingest.QuarantinePrefix)
	}
	obj, err := s3For(ref).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(ref.QuarantineBucket), Key: aws.String(id)})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", id, err)
	}
	defer obj.Body.Close()
	b, err := io.ReadAll(obj.Body)
	if err != nil {
		return nil, err
	}
	var q ingest.Quarantined
	if err := json.Unmarshal(b, &q); err != nil {
		return nil, fmt.Errorf("%s is not a quarantined delivery: %w", id, err)
	}
	return &q, nil
}

func newQuarantineCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "quarantine", Short: "Inspect quarantined payloads and re-run one after a mapping fix"}
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
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCONNECTOR\tBYTES\tSTORED")
			for _, it := range items {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", it.ID, it.Connector, it.Size, it.ReceivedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print [{id, connector, size, received_at}]")
	show := &cobra.Command{
		Use:   "show <id>",
		Short: "Show one quarantined payload: connector, reason, request metadata and body",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			q, err := getQuarantined(cmd.Context(), ref, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"id": args[0], "connector": q.Connector, "reason": q.Reason,
				"received_at": q.ReceivedAt, "method": q.Method, "path": q.Path, "headers": q.Headers, "body": string(q.Body)})
		},
	}
	release := &cobra.Command{
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
			ctx := cmd.Context()
			q, err := getQuarantined(ctx, ref, args[0])
			if err != nil {
				return err
			}
			conn, err := registry.New(q.Connector)
			if err != nil {
				return err
			}
			var sec connector.Secret
			// Graph keeps only items whose clientState matches: it needs the secret to parse.
			if id, ok := ref.Resources[secretLogicalID(q.Connector)]; ok {
				if s, err := secrets.New(secretsManagerFor(ref), time.Minute, nil).Get(ctx, id.Ref); err == nil {
					sec = s
				}
			}
			now := time.Now()
			req := &connector.Request{Method: q.Method, Path: q.Path, Headers: q.Headers, RawQuery: q.RawQuery, Body: q.Body,
				PublicURL: q.PublicURL, ReceivedAt: q.ReceivedAt}
			parsed, err := conn.Parse(req, sec)
			if err != nil {
				return fmt.Errorf("%s still does not parse (fix the mapping first): %w", args[0], err)
			}
			for i := range parsed.Events {
				parsed.Events[i].ReceivedAt = now
				if err := parsed.Events[i].Validate(); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
			}
			if err := ingest.Enqueue(ctx, sqs.NewFromConfig(ref.AWS), ref.IngestQueueURL, parsed.Events); err != nil {
				return err
			}
			dest := releasedPrefix + strings.TrimPrefix(args[0], ingest.QuarantinePrefix)
			s := s3For(ref)
			if _, err := s.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(ref.QuarantineBucket), Key: aws.String(dest),
				CopySource: aws.String(ref.QuarantineBucket + "/" + args[0])}); err != nil {
				return fmt.Errorf("events enqueued, but keeping %s as released failed: %w", args[0], err)
			}
			if _, err := s.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(ref.QuarantineBucket), Key: aws.String(args[0])}); err != nil {
				return fmt.Errorf("events enqueued, but removing %s from quarantine failed: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released %s: %d event(s) enqueued; kept as %s\n", args[0], len(parsed.Events), dest)
			return nil
		},
	}
	cmd.AddCommand(list, show, release)
	return cmd
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
