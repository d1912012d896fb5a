package testpeer

import (
	"net"
	"net/http"

	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
)

func acceptWS(w http.ResponseWriter, r *http.Request, subprotocol string) (net.Conn, error) {
	return wsconn.Accept(w, r, subprotocol)
}
