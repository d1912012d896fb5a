package charttest

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper-case: FROM, RUN, USER, …
	args string
}

// parseDockerfile splits a Dockerfile into instructions. It handles comments, parser
// directives and backslash continuations, which is all this repository's Dockerfile
// uses; it is not a full BuildKit parser (heredocs are not supported).
func parseDockerfile(src string) []instruction {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(src, "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment lines inside a continued instruction are dropped
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// finalStage returns the instructions from the last FROM on.
func finalStage(ins []instruction) []instruction {
	last := -1
	for i, in := range ins {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	return ins[last:]
}

var goDirectiveRE = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)

// TestImageMatchesChart checks the repository's Dockerfile against what the chart and
// the service assume, since no Docker engine is available to build it here: a static
// (CGO-free, -trimpath) build with the service's Go version, a distroless nonroot final
// stage running as the chart's UID, the chart's port, an exec-form entrypoint (there is
// no shell) and the chart's data directory.
func TestImageMatchesChart(t *testing.T) {
	ins := parseDockerfile(string(mustReadFile(t, "../../Dockerfile")))
	if len(ins) == 0 {
		t.Fatal("Dockerfile: no instructions")
	}
	c := mustLoadChart(t)
	r := mustRender(t, c, valuesCase{name: "default"})
	o := mustDecode(t, r)
	wantUID := strconv.FormatInt(mustInt(t, r.values, "securityContext.runAsUser"), 10)
	wantPort := strconv.Itoa(int(o.deployment.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort))

	// The build stage.
	m := goDirectiveRE.FindSubmatch(mustReadFile(t, "../../go.mod"))
	if m == nil {
		t.Fatal("go.mod: no go directive")
	}
	wantGo := string(m[1])
	var goArg, build string
	for _, in := range ins {
		if in.cmd == "ARG" && strings.HasPrefix(in.args, "GO_VERSION=") {
			goArg = strings.TrimPrefix(in.args, "GO_VERSION=")
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	if goArg != wantGo {
		t.Errorf("Dockerfile ARG GO_VERSION: got %q, want %q (go.mod's go directive)", goArg, wantGo)
	}
	for _, in := range ins {
		if in.cmd == "FROM" {
			if !strings.HasPrefix(in.args, "golang:${GO_VERSION}") {
				t.Errorf("Dockerfile first FROM: got %q, want golang:${GO_VERSION}", in.args)
			}
			break
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/tokensvc"} {
		if !strings.Contains(build, want) {
			t.Errorf("Dockerfile go build: got %q, want it to contain %q", build, want)
		}
	}

	// The final stage.
	final := finalStage(ins)
	from := final[0].args
	if !(strings.HasPrefix(from, "gcr.io/distroless/static") && strings.HasSuffix(from, ":nonroot")) && from != "scratch" {
		t.Errorf("final FROM: got %q, want distroless static :nonroot (or scratch)", from)
	}
	got := map[string]string{}
	var runs []string
	for _, in := range final[1:] {
		switch in.cmd {
		case "USER", "EXPOSE", "ENTRYPOINT":
			got[in.cmd] = in.args
		case "ENV":
			if v, ok := strings.CutPrefix(in.args, "TOKENSVC_DATA_DIR="); ok {
				got["TOKENSVC_DATA_DIR"] = v
			}
		case "RUN":
			runs = append(runs, in.args)
		}
	}
	if user := got["USER"]; user != wantUID && user != wantUID+":"+wantUID {
		t.Errorf("final USER: got %q, want %s (the chart's runAsUser)", user, wantUID)
	}
	if got["EXPOSE"] != wantPort {
		t.Errorf("EXPOSE: got %q, want %s (the chart's container port)", got["EXPOSE"], wantPort)
	}
	if ep := got["ENTRYPOINT"]; !strings.HasPrefix(ep, `["`) || !strings.Contains(ep, "tokensvc") {
		t.Errorf("ENTRYPOINT: got %q, want the exec form running tokensvc (the image has no shell)", ep)
	}
	if len(runs) > 0 {
		t.Errorf("final stage RUN %q: want none (distroless has no shell)", runs)
	}
	if got["TOKENSVC_DATA_DIR"] != "/var/lib/tokensvc" {
		t.Errorf("ENV TOKENSVC_DATA_DIR: got %q, want /var/lib/tokensvc (where the chart mounts the embedded store)", got["TOKENSVC_DATA_DIR"])
	}
}

func TestParseDockerfile(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\nARG A=1\n\nFROM x AS b\nRUN a \\\n    # note\n    b\nUSER 1:1\n"
	got := parseDockerfile(src)
	want := []instruction{
		{line: 2, cmd: "ARG", args: "A=1"},
		{line: 4, cmd: "FROM", args: "x AS b"},
		{line: 5, cmd: "RUN", args: "a      b"},
		{line: 8, cmd: "USER", args: "1:1"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d instructions %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].cmd != want[i].cmd || strings.Join(strings.Fields(got[i].args), " ") != strings.Join(strings.Fields(want[i].args), " ") || got[i].line != want[i].line {
			t.Errorf("instruction %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
