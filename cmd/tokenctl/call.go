package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// response is what every generated *XxxResponse offers and the checks below need.
type response interface {
	StatusCode() int
	Status() string
	GetBody() []byte
}

// fetch checks what one generated-client call returned. The typed body comes back only
// when the service answered with the status that body stands for (the generated client
// fills it in for no other); a transport error comes back as it is, and any other answer
// becomes the error problemError makes of it.
func fetch[R response, T any](resp R, err error, body func(R) *T) (*T, error) {
	if err != nil {
		return nil, err
	}
	if b := body(resp); b != nil {
		return b, nil
	}
	return nil, problemError(resp.StatusCode(), resp.Status(), resp.GetBody())
}

// show is the whole of a command that prints one answer: fetch, then print the body as
// JSON with -o json, else the table view makes of it.
func show[R response, T any](c *cli, resp R, err error, body func(R) *T, view func(*T) table) error {
	b, err := fetch(resp, err, body)
	if err != nil {
		return err
	}
	return c.print(b, func() table { return view(b) })
}

// showOne is the whole of a command that takes one name (a hub's, a device's ID) and
// prints what call answers for it.
func showOne[R response, T any](ctx context.Context, c *cli, name string, args []string,
	call func(context.Context, string, ...oapi.RequestEditorFn) (R, error), body func(R) *T, view func(*T) table) error {
	pos, err := c.positional(name, args, 1)
	if err != nil {
		return err
	}
	resp, err := call(ctx, pos[0])
	return show(c, resp, err, body, view)
}

// showAll is the whole of a command that takes no argument and prints what call
// answers (a list).
func showAll[R response, T any](ctx context.Context, c *cli, name string, args []string,
	call func(context.Context, ...oapi.RequestEditorFn) (R, error), body func(R) *T, view func(*T) table) error {
	if _, err := c.positional(name, args, 0); err != nil {
		return err
	}
	resp, err := call(ctx)
	return show(c, resp, err, body, view)
}

// streamError is problemError for a raw-client answer (streamed calls: import,
// backup) whose status is not 200, reading at most 64 KiB of its body; nil for a 200.
func streamError(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return problemError(resp.StatusCode, resp.Status, body)
}

// problemError is the error for an answer other than the one asked for: the service's
// problem title and detail when the body is one, else only the status line. A body that
// is not a problem is never echoed: it could hold anything.
func problemError(code int, status string, body []byte) error {
	var p struct {
		Title  string  `json:"title"`
		Detail *string `json:"detail"`
	}
	if json.Unmarshal(body, &p) == nil && p.Title != "" {
		if p.Detail != nil && *p.Detail != "" {
			return fmt.Errorf("%d %s: %s", code, p.Title, *p.Detail)
		}
		return fmt.Errorf("%d %s", code, p.Title)
	}
	return fmt.Errorf("unexpected response %s", status)
}
