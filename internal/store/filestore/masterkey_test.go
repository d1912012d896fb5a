package filestore_test

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

func TestLoadOrCreateMasterKeyCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "keys")
	path := filepath.Join(dir, "master.key")

	key, err := filestore.LoadOrCreateMasterKey(path)
	if err != nil {
		t.Fatalf("LoadOrCreateMasterKey: got error %v, want nil", err)
	}
	if len(key) != filestore.KeySize {
		t.Fatalf("key length: got %d, want %d", len(key), filestore.KeySize)
	}
	checkMode(t, path, 0o600)
	checkMode(t, dir, 0o700)
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) != 1 {
		t.Errorf("directory entries: got %d, want 1 (no temporary file left)", len(entries))
	}

	again, err := filestore.LoadOrCreateMasterKey(path)
	if err != nil {
		t.Fatalf("second LoadOrCreateMasterKey: got error %v, want nil", err)
	}
	if !bytes.Equal(again, key) {
		t.Error("second LoadOrCreateMasterKey: got a different key, want the stored one")
	}

	// The stored key is usable as configuration too.
	raw, err := os.ReadFile(path)
	must(t, err)
	parsed, err := filestore.ParseMasterKey(string(raw))
	if err != nil || !bytes.Equal(parsed, key) {
		t.Errorf("ParseMasterKey(file contents): got %x, %v, want the key, nil", parsed, err)
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s: got %04o, want %04o", path, got, want)
	}
}

func TestLoadOrCreateMasterKeyExisting(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5}, filestore.KeySize)
	valid := base64.StdEncoding.EncodeToString(key) + "\n"
	tests := []struct {
		name    string
		content string
		mode    fs.FileMode
		want    []byte
		wantErr bool
	}{
		{name: "valid 0600", content: valid, mode: 0o600, want: key},
		{name: "valid 0400", content: valid, mode: 0o400, want: key},
		{name: "world readable", content: valid, mode: 0o644, wantErr: true},
		{name: "group readable", content: valid, mode: 0o640, wantErr: true},
		{name: "group writable", content: valid, mode: 0o620, wantErr: true},
		{name: "not base64", content: "not*base64*at*all", mode: 0o600, wantErr: true},
		{name: "too short", content: base64.StdEncoding.EncodeToString(key[:16]), mode: 0o600, wantErr: true},
		{name: "empty", content: "", mode: 0o600, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			must(t, os.WriteFile(path, []byte(tc.content), 0o600))
			must(t, os.Chmod(path, tc.mode))

			got, err := filestore.LoadOrCreateMasterKey(path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("LoadOrCreateMasterKey: got error %v, want error %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("key: got %x, want %x", got, tc.want)
			}
			if err != nil && tc.content != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.content)) {
				t.Errorf("error %q: contains the file contents, want them kept out", err)
			}
			after, rerr := os.ReadFile(path)
			must(t, rerr)
			if string(after) != tc.content {
				t.Error("LoadOrCreateMasterKey changed an existing key file")
			}
		})
	}
}

func TestParseMasterKey(t *testing.T) {
	key := bytes.Repeat([]byte{0x3c}, filestore.KeySize)
	enc := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr bool
	}{
		{name: "valid", in: enc, want: key},
		{name: "surrounding whitespace", in: "  " + enc + "\n", want: key},
		{name: "url alphabet", in: base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)), wantErr: true},
		{name: "unpadded", in: base64.RawStdEncoding.EncodeToString(key), wantErr: true},
		{name: "16 bytes", in: base64.StdEncoding.EncodeToString(key[:16]), wantErr: true},
		{name: "33 bytes", in: base64.StdEncoding.EncodeToString(append(key, 1)), wantErr: true},
		{name: "hex", in: strings.Repeat("ab", 32), wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := filestore.ParseMasterKey(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseMasterKey: got error %v, want error %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("ParseMasterKey: got %x, want %x", got, tc.want)
			}
			if err != nil && tc.in != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.in)) {
				t.Errorf("error %q: contains the input, want it kept out", err)
			}
		})
	}
}
