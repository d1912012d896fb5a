package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
)

// table is what a command prints without -o json: an optional note for stderr (say,
// that secrets are shown once), a tab-separated header and the rows.
type table struct {
	note   string
	header string
	rows   [][]string
}

// print writes v as indented JSON with -o json, else the table view makes of it. The
// view is built only for table output.
func (c *cli) print(v any, view func() table) error {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	t := view()
	if t.note != "" {
		fmt.Fprintln(c.stderr, "tokenctl:", t.note)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, t.header)
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// rowsOf is the table rows of items, one per item.
func rowsOf[T any](items []T, row func(T) []string) [][]string {
	rows := make([][]string, len(items))
	for i, it := range items {
		rows[i] = row(it)
	}
	return rows
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
