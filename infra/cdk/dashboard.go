package main

import (
	_ "embed"
	"regexp"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/jsii-runtime-go"
)

// dashboardBody is the ops dashboard (the same JSON as template.yaml's OpsDashboard), with
// ${ConstructId} and ${ConstructId.Attribute} placeholders for the stack's resources and
// ${AWS::Region}-style pseudo parameters.
//
//go:embed dashboard.json
var dashboardBody string

var placeholderRE = regexp.MustCompile(`\$\{([A-Za-z0-9]+)(?:\.([A-Za-z0-9]+))?\}`)

func (c *crmsync) dashboard() {
	vars := map[string]*string{}
	body := placeholderRE.ReplaceAllStringFunc(dashboardBody, func(m string) string {
		sm := placeholderRE.FindStringSubmatch(m)
		id, attr := sm[1], sm[2]
		child := c.stack.Node().TryFindChild(jsii.String(id))
		if child == nil {
			panic("dashboard.json refers to " + m + ": no construct " + id + " in the stack")
		}
		var res awscdk.CfnResource
		if r, ok := child.(awscdk.CfnResource); ok {
			res = r
		} else {
			res = child.Node().DefaultChild().(awscdk.CfnResource)
		}
		name := id + attr
		if attr == "" {
			vars[name] = res.Ref()
		} else {
			vars[name] = res.GetAtt(jsii.String(attr), awscdk.ResolutionTypeHint_STRING).ToString()
		}
		return "${" + name + "}"
	})
	awscloudwatch.NewCfnDashboard(c.stack, jsii.String("OpsDashboard"), &awscloudwatch.CfnDashboardProps{
		DashboardName: awscdk.Fn_Sub(jsii.String("${AWS::StackName}-ops"), nil),
		DashboardBody: awscdk.Fn_Sub(jsii.String(strings.TrimSpace(body)+"\n"), &vars),
	})
}
