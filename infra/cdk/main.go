// Command cdk is crmsync's AWS CDK app: the system template.yaml declares, deployed from the same
// bootstrap binaries (`make dist`). template.yaml is the reference; parity_test.go holds the two
// together.
//
//	make dist && cd infra/cdk && cdk deploy     # with the CDK CLI
//	make synth                                  # the cloud assembly in infra/cdk/cdk.out, no CLI needed
//
// Environment: CRMSYNC_DIST_DIR (default ../../dist, relative to this directory); CDK_OUTDIR (set by
// the CDK CLI; default cdk.out). Context: stackName (default crmsync).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

// StackID is the construct id of the one stack; aws:cdk:path metadata starts with it.
const StackID = "Crmsync"

func main() {
	distDir := os.Getenv("CRMSYNC_DIST_DIR")
	if distDir == "" {
		distDir = filepath.Join("..", "..", "dist")
	}
	if err := checkDist(distDir); err != nil {
		fmt.Fprintln(os.Stderr, "crmsync cdk:", err)
		os.Exit(1)
	}
	outdir := os.Getenv("CDK_OUTDIR") // the CDK CLI sets it
	if outdir == "" {
		outdir = "cdk.out"
	}
	synth(outdir, distDir, "")
	jsii.Close()
}

// synth writes the cloud assembly for the stack into outdir. stackName "" = the stackName context
// or "crmsync".
func synth(outdir, distDir, stackName string) {
	abs, err := filepath.Abs(distDir)
	if err != nil {
		panic(err)
	}
	app := awscdk.NewApp(&awscdk.AppProps{
		Outdir:             jsii.String(outdir),
		AnalyticsReporting: jsii.Bool(false),
		Context: &map[string]any{
			// aws:cdk:path on every resource: the parity test maps resources by it. The CDK CLI
			// turns it on too; set here so that `go run .` alone gives the same template.
			"aws:cdk:enable-path-metadata": true,
		},
	})
	if stackName == "" {
		stackName = "crmsync"
		if v, ok := app.Node().TryGetContext(jsii.String("stackName")).(string); ok && v != "" {
			stackName = v
		}
	}
	NewCrmsyncStack(app, StackID, &awscdk.StackProps{StackName: jsii.String(stackName)}, StackConfig{DistDir: abs})
	app.Synth(nil)
}

// checkDist fails, naming `make dist`, unless every function's bootstrap is in distDir: the app
// deploys those binaries and never builds its own.
func checkDist(distDir string) error {
	var missing []string
	for _, id := range FunctionIDs() {
		p := filepath.Join(distDir, id, "bootstrap")
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			missing = append(missing, filepath.Join(id, "bootstrap"))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	what := strings.Join(missing, ", ")
	if len(missing) == len(FunctionIDs()) {
		what = "every function's bootstrap"
	}
	return fmt.Errorf("%s lacks %s: run `make dist` at the repository root first "+
		"(the CDK app deploys the binaries it builds; `make synth` runs both)", distDir, what)
}
