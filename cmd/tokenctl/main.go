// Command tokenctl is the operator CLI for tokensvc: devices (add, list, get, rotate,
// revoke, import) and hubs (add, list, get), over the generated API client. The server
// comes from TOKENSVC_URL (default http://localhost:8080), the admin token from
// TOKENSVC_ADMIN_TOKEN; see `tokenctl help`.
package main

import "github.com/tokensvc/tokensvc/internal/cliflags"

func main() {
	cliflags.MainArgs("tokenctl", run)
}
