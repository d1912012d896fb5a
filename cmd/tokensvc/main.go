// Command tokensvc is the credential broker: it keeps device keys in a store (an
// encrypted local file by default) and mints short-lived SAS tokens for devices that
// prove who they are. Configuration: flags or TOKENSVC_* environment variables; see
// the README.
package main

import "github.com/tokensvc/tokensvc/internal/cliflags"

func main() {
	cliflags.MainArgs("tokensvc", run)
}
