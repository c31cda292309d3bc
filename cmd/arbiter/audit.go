package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arbiter-mcp/arbiter/engine/audit"
)

const auditUsage = `usage: arbiter audit query --file FILE [filters] [-o text|json]

Answers "which client reached which server, through which scope, under which session state
and policy revision" from decision log files: FILE and its rotated backups, oldest first.

Filters (all must match): --client ID --subject ID --server ID --session ID --result R
--action A --since T --until T (T is RFC 3339, or a duration back from now such as 2h).
`

func auditCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "query" {
		fmt.Fprint(stderr, auditUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("audit query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", os.Getenv("ARBITER_DECISION_LOG"), "decision log file (env ARBITER_DECISION_LOG)")
	client := fs.String("client", "", "client id")
	subject := fs.String("subject", "", "subject id")
	server := fs.String("server", "", "server id")
	session := fs.String("session", "", "session id")
	result := fs.String("result", "", "allow, deny or require_approval")
	action := fs.String("action", "", "action, such as tools/call or sessions/revoke")
	since := fs.String("since", "", "earliest time (RFC 3339 or a duration ago)")
	until := fs.String("until", "", "latest time (RFC 3339 or a duration ago)")
	output := fs.String("o", "text", "text or json")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *file == "" {
		return fmt.Errorf("--file is required")
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o must be text or json")
	}
	from, err := parseWhen("--since", *since)
	if err != nil {
		return err
	}
	to, err := parseWhen("--until", *until)
	if err != nil {
		return err
	}
	files, err := logFiles(*file)
	if err != nil {
		return err
	}
	match := func(l *audit.Line) bool {
		t, _ := time.Parse(time.RFC3339Nano, l.Time)
		return (*client == "" || l.Client.ID == *client) &&
			(*subject == "" || l.SubjectID == *subject) &&
			(*server == "" || l.Server != nil && l.Server.ID == *server) &&
			(*session == "" || l.Session != nil && l.Session.ID == *session) &&
			(*result == "" || l.Result == *result) &&
			(*action == "" || l.Action == *action) &&
			(from.IsZero() || !t.Before(from)) && (to.IsZero() || !t.After(to))
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if *output == "text" {
		fmt.Fprintln(tw, "TIME\tACTION\tRESULT\tCLIENT\tSUBJECT\tSERVER/TOOL\tSESSION\tSCOPES\tREVISION\tREASONS")
	}
	for _, name := range files {
		if err := scanLog(name, func(raw []byte, l *audit.Line) {
			if !match(l) {
				return
			}
			if *output == "json" {
				fmt.Fprintf(stdout, "%s\n", raw)
				return
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Time, l.Action, l.Result, l.Client.ID, l.SubjectID,
				serverTool(l), sessionOf(l), scopesOf(l), revisions(l.PolicyRevision), strings.Join(l.Reasons, ","))
		}); err != nil {
			return err
		}
	}
	return tw.Flush()
}

func parseWhen(flagName, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 (2026-11-26T12:00:00Z) or a duration (2h)", flagName, v)
	}
	return t, nil
}

// logFiles is the log file and its rotated backups (NAME-TIMESTAMP.EXT), oldest first.
func logFiles(name string) ([]string, error) {
	ext := filepath.Ext(name)
	backups, err := filepath.Glob(strings.TrimSuffix(name, ext) + "-*" + ext)
	if err != nil {
		return nil, err
	}
	sort.Strings(backups) // the timestamp in the name sorts in time order
	files := backups
	if _, err := os.Stat(name); err == nil {
		files = append(files, name)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("--file %s: no such decision log", name)
	}
	return files, nil
}

func scanLog(name string, each func([]byte, *audit.Line)) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	n := 0
	for sc.Scan() {
		n++
		var l audit.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("%s:%d: not a decision record: %v", name, n, err)
		}
		each(sc.Bytes(), &l)
	}
	return sc.Err()
}

func serverTool(l *audit.Line) string {
	s := "-"
	if l.Server != nil {
		s = l.Server.ID
	}
	if l.Tool != "" {
		s += "/" + l.Tool
	}
	return s
}

func sessionOf(l *audit.Line) string {
	if l.Session == nil {
		return "-"
	}
	return l.Session.ID + " (" + l.Session.Status + ")"
}

func scopesOf(l *audit.Line) string {
	if l.Credential == nil || len(l.Credential.Scopes) == 0 {
		return "-"
	}
	return strings.Join(l.Credential.Scopes, " ")
}

func revisions(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"@"+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
