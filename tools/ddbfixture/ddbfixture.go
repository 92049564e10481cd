// Package ddbfixture owns table fixtures for tests: every item of a DynamoDB table written to a
// file in DynamoDB's own JSON (the shape `aws dynamodb scan` prints: {"S": "..."}, {"N": "1"},
// {"B": "<base64>"}, {"M": {...}}, ...) and put back into another table. The migration tests
// fill fresh tables with items an older crmsync wrote, and check today's code reads them.
package ddbfixture

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Item is one item in DynamoDB JSON.
type Item map[string]any

// Tables are the items of each table, by a name the test chooses (e.g. "ledger", "crm").
type Tables map[string][]Item

// API is the part of the DynamoDB client a fixture uses.
type API interface {
	Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

// Dump reads every item of table, sorted by its pk and sk so that a fixture diffs cleanly.
func Dump(ctx context.Context, api API, table string) ([]Item, error) {
	var out []Item
	p := dynamodb.NewScanPaginator(api, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", table, err)
		}
		for _, item := range page.Items {
			out = append(out, Encode(item))
		}
	}
	sort.Slice(out, func(i, j int) bool { return sortKey(out[i]) < sortKey(out[j]) })
	return out, nil
}

// sortKey orders items by their pk, then sk.
func sortKey(it Item) string {
	s := func(name string) string {
		if v, ok := it[name].(map[string]any); ok {
			if str, ok := v["S"].(string); ok {
				return str
			}
		}
		return ""
	}
	return s("pk") + "\x00" + s("sk")
}

// Load puts every item into table.
func Load(ctx context.Context, api API, table string, items []Item) error {
	for i, it := range items {
		item, err := Decode(it)
		if err != nil {
			return fmt.Errorf("%s item %d: %w", table, i, err)
		}
		if _, err := api.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
			return fmt.Errorf("put %s item %d: %w", table, i, err)
		}
	}
	return nil
}

// Read reads a fixture file.
func Read(path string) (Tables, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Tables
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Write writes a fixture file, indented.
func Write(path string, t Tables) error {
	b, err := json.MarshalIndent(t, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Encode converts an item to DynamoDB JSON.
func Encode(item map[string]types.AttributeValue) Item {
	out := Item{}
	for k, v := range item {
		out[k] = encode(v)
	}
	return out
}

func encode(v types.AttributeValue) map[string]any {
	switch x := v.(type) {
	case *types.AttributeValueMemberS:
		return map[string]any{"S": x.Value}
	case *types.AttributeValueMemberN:
		return map[string]any{"N": x.Value}
	case *types.AttributeValueMemberB:
		return map[string]any{"B": base64.StdEncoding.EncodeToString(x.Value)}
	case *types.AttributeValueMemberBOOL:
		return map[string]any{"BOOL": x.Value}
	case *types.AttributeValueMemberNULL:
		return map[string]any{"NULL": true}
	case *types.AttributeValueMemberSS:
		return map[string]any{"SS": x.Value}
	case *types.AttributeValueMemberNS:
		return map[string]any{"NS": x.Value}
	case *types.AttributeValueMemberBS:
		bs := make([]string, len(x.Value))
		for i, b := range x.Value {
			bs[i] = base64.StdEncoding.EncodeToString(b)
		}
		return map[string]any{"BS": bs}
	case *types.AttributeValueMemberL:
		l := make([]any, len(x.Value))
		for i, e := range x.Value {
			l[i] = encode(e)
		}
		return map[string]any{"L": l}
	case *types.AttributeValueMemberM:
		m := map[string]any{}
		for k, e := range x.Value {
			m[k] = encode(e)
		}
		return map[string]any{"M": m}
	}
	return map[string]any{"NULL": true}
}

// Decode converts an item from DynamoDB JSON.
func Decode(it Item) (map[string]types.AttributeValue, error) {
	out := make(map[string]types.AttributeValue, len(it))
	for k, v := range it {
		av, err := decode(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
		out[k] = av
	}
	return out, nil
}

func decode(v any) (types.AttributeValue, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return nil, errors.New("not one typed DynamoDB JSON value")
	}
	for tag, raw := range m {
		switch tag {
		case "S":
			s, ok := raw.(string)
			if !ok {
				return nil, errors.New("S is not a string")
			}
			return &types.AttributeValueMemberS{Value: s}, nil
		case "N":
			s, ok := raw.(string)
			if !ok {
				return nil, errors.New("N is not a string")
			}
			return &types.AttributeValueMemberN{Value: s}, nil
		case "B":
			s, _ := raw.(string)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf("B: %w", err)
			}
			return &types.AttributeValueMemberB{Value: b}, nil
		case "BOOL":
			b, ok := raw.(bool)
			if !ok {
				return nil, errors.New("BOOL is not a boolean")
			}
			return &types.AttributeValueMemberBOOL{Value: b}, nil
		case "NULL":
			return &types.AttributeValueMemberNULL{Value: true}, nil
		case "SS", "NS", "BS":
			list, _ := raw.([]any)
			strs := make([]string, len(list))
			for i, e := range list {
				strs[i], _ = e.(string)
			}
			switch tag {
			case "SS":
				return &types.AttributeValueMemberSS{Value: strs}, nil
			case "NS":
				return &types.AttributeValueMemberNS{Value: strs}, nil
			}
			bs := make([][]byte, len(strs))
			for i, s := range strs {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return nil, fmt.Errorf("BS: %w", err)
				}
				bs[i] = b
			}
			return &types.AttributeValueMemberBS{Value: bs}, nil
		case "L":
			list, _ := raw.([]any)
			out := make([]types.AttributeValue, len(list))
			for i, e := range list {
				av, err := decode(e)
				if err != nil {
					return nil, fmt.Errorf("L[%d]: %w", i, err)
				}
				out[i] = av
			}
			return &types.AttributeValueMemberL{Value: out}, nil
		case "M":
			mm, _ := raw.(map[string]any)
			out := make(map[string]types.AttributeValue, len(mm))
			for k, e := range mm {
				av, err := decode(e)
				if err != nil {
					return nil, fmt.Errorf("M.%s: %w", k, err)
				}
				out[k] = av
			}
			return &types.AttributeValueMemberM{Value: out}, nil
		}
		return nil, fmt.Errorf("unknown type %q", tag)
	}
	return nil, errors.New("empty value")
}
