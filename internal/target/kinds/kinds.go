// Package kinds lists the target kinds tokensvc serves. Adding a kind is one line here.
package kinds

import (
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/target/dps"
	"github.com/tokensvc/tokensvc/internal/target/eventhubs"
	"github.com/tokensvc/tokensvc/internal/target/iothub"
	"github.com/tokensvc/tokensvc/internal/target/jwtbroker"
)

// All returns every kind tokensvc serves.
func All() *target.Set {
	return target.NewSet(
		iothub.Kind{},
		eventhubs.Kind{},
		dps.Kind{},
		awsiot.Kind{},
		jwtbroker.Kind{},
	)
}
