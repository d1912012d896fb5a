// Command vault is the HashiCorp Vault server, built from its published Go module so the
// tests can run a real dev server without downloading a release binary.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
