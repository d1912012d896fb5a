package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// deviceImport streams FILE to the service and the report to stdout as it arrives; the
// summary also goes to stderr. The report is NDJSON in both output modes: it carries
// the generated secrets, and a table would lose them. It goes through the raw client
// (no overall timeout, body streamed), so it checks the status itself.
func (c *cli) deviceImport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices import", flag.ContinueOnError)
	format := fs.String("format", "", "ndjson or csv (default: from the file name, else ndjson)")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	if *format == "" {
		*format = "ndjson"
		if strings.EqualFold(filepath.Ext(pos[0]), ".csv") {
			*format = "csv"
		}
	}
	ct := map[string]string{"ndjson": "application/x-ndjson", "csv": "text/csv"}[*format]
	if ct == "" {
		return fmt.Errorf("-format %q: want ndjson or csv", *format)
	}
	resp, err := c.http.ImportDevicesWithBody(ctx, ct, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := streamError(resp); err != nil {
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var summary struct {
		Summary *struct{ Created, Skipped, Rejected int } `json:"summary"`
		Error   string                                    `json:"error"`
	}
	for sc.Scan() {
		if _, err := fmt.Fprintf(c.stdout, "%s\n", sc.Bytes()); err != nil {
			return err
		}
		_ = json.Unmarshal(sc.Bytes(), &summary)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the report: %w", err)
	}
	if summary.Summary == nil {
		return errors.New("the report ended without a summary; the import may be incomplete")
	}
	s := summary.Summary
	fmt.Fprintf(c.stderr, "tokenctl: %d created, %d skipped, %d rejected\n", s.Created, s.Skipped, s.Rejected)
	if summary.Error != "" {
		return fmt.Errorf("import stopped: %s", summary.Error)
	}
	if s.Rejected > 0 {
		return fmt.Errorf("%d line(s) rejected; see the report", s.Rejected)
	}
	return nil
}
