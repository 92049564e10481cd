// Command crmchanges is crmsync's CRM changes Lambda function (POST /crm/changes). Like every function's main it only names its
// builder: shared/app loads the configuration once, builds the clients once, wires the handler
// and starts the Lambda runtime loop.
package main

import "github.com/crmsync/crmsync/shared/app"

func main() { app.Main("crmchanges", app.CrmChanges) }
