package reliability

import (
	"context"
	"fmt"
	"os"
	"testing"
)

func TestQuickTmp(t *testing.T) {
	f, _ := os.Create("/tmp/rel/fn.log")
	defer f.Close()
	v, err := Run(context.Background(), Options{Root: "../..", Endpoint: os.Getenv("EP"), Events: 1000, People: 100, DupRate: 0.3, ReorderRate: 0.2,
		Faults: os.Getenv("F"), Seed: 1, Log: os.Stdout, FunctionLog: f, ProgressEvery: 5e9, DrainTimeout: 90e9})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%+v\n", *v)
	for _, x := range v.Findings {
		fmt.Println(x)
	}
}
