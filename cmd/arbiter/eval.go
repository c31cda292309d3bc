package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/arbiter-mcp/arbiter/engine"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

const evalUsage = "usage: arbiter eval --input FILE [--policy DIR | --bundle FILE] [--session FILE] [--now TIME] [--evaluator ir|topdown] [--explain]"

// maxEvalBundleFileBytes bounds any one file of a bundle given to eval, as OPA's reader
// counts it after decompression: a guard against gzip bombs.
const maxEvalBundleFileBytes = 16 << 20

// evalCmd prints the decision the service would make for one policy input document, after
// the rules the engine enforces around the policy, and with --explain which rules held and
// which rule produced each reason.
func evalCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inputPath := fs.String("input", "", "JSON file holding the policy input document (required; - for stdin)")
	policyDir := fs.String("policy", "", "directory of Rego modules and data.json (default: the embedded policy)")
	bundlePath := fs.String("bundle", "", "policy bundle (.tar.gz), as opa build writes it, instead of --policy")
	sessionPath := fs.String("session", "", "JSON file holding input.session: the session as the policy sees it, or the output of `arbiter sessions show -o json`")
	var now time.Time
	fs.Func("now", "time of the decision, RFC 3339; replaces input.now (default: input.now, else the current time)", func(s string) error {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return errors.New("not an RFC 3339 time, such as 2026-11-26T12:00:00Z")
		}
		now = t
		return nil
	})
	evaluator := fs.String("evaluator", engine.EvaluatorIR, "what decides, as serve --evaluator: ir (the policy's plan; topdown for a policy the plan executor cannot run) or topdown (OPA's evaluator)")
	explain := fs.Bool("explain", false, "after the decision, print the policy's result, which rule produced each reason and every rule that held")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *inputPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, evalUsage)
		return errUsage
	}
	if *policyDir != "" && *bundlePath != "" {
		fmt.Fprintln(stderr, "--policy and --bundle are alternatives: give one")
		fmt.Fprintln(stderr, evalUsage)
		return errUsage
	}
	if err := engine.CheckEvaluator(*evaluator); err != nil {
		fmt.Fprintf(stderr, "--%v\n", err)
		return errUsage
	}

	input, err := readInput(*inputPath)
	if err != nil {
		return err
	}
	if *sessionPath != "" {
		sess, err := readSession(*sessionPath)
		if err != nil {
			return err
		}
		input["session"] = sess
	}
	// The clock follows the decision time, so time.now_ns() agrees with input.now.
	if now.IsZero() {
		if s, ok := input["now"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				now = t
			}
		}
	} else {
		input["now"] = now.UTC().Format(time.RFC3339Nano)
	}
	cfg := engine.Config{Logger: slog.New(slog.NewTextHandler(stderr, nil)), Evaluator: *evaluator}
	if !now.IsZero() {
		cfg.Clock = func() time.Time { return now }
	}

	var pol engine.Policy
	if *bundlePath != "" {
		pol, err = readBundle(*bundlePath)
	} else {
		pol, err = loadPolicy(*policyDir)
	}
	if err != nil {
		return err
	}
	// Policy errors deny, as in the service; the author sees the detail on stderr.
	eng, err := engine.New(ctx, cfg, pol)
	if err != nil {
		return fmt.Errorf("activate policy: %w", err)
	}

	if !*explain {
		d, err := eng.EvaluateInput(ctx, input)
		if err != nil {
			return err
		}
		return printDecision(stdout, d)
	}
	ex, err := eng.Explain(ctx, input)
	if err != nil {
		return err
	}
	if err := printDecision(stdout, ex.Decision); err != nil {
		return err
	}
	printExplanation(stdout, ex)
	return nil
}

func printDecision(w io.Writer, d engine.Decision) error {
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return err
}

// readInput reads a JSON object from path, or from stdin for "-". Numbers stay exact.
func readInput(path string) (map[string]any, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("--input: %w", err)
	}
	input, err := jsonObject(raw)
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", path, err)
	}
	return input, nil
}

func jsonObject(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("not a JSON object")
	}
	return obj, nil
}

// readSession reads input.session from path: either the session as the policy sees it
// (status "active", calls {total, by_server, by_tool}, ...), or a session as `arbiter sessions
// show -o json` prints it (status "SESSION_STATUS_ACTIVE", calls_total, ...), converted.
func readSession(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--session: %w", err)
	}
	sess, err := jsonObject(raw)
	if err != nil {
		return nil, fmt.Errorf("--session %s: %w", path, err)
	}
	if st, _ := sess["status"].(string); !strings.HasPrefix(st, "SESSION_STATUS_") {
		return sess, nil
	}
	var s arbiterv1.Session
	if err := protojson.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("--session %s: not a session as `arbiter sessions show -o json` prints it: %w", path, err)
	}
	return sessionInput(&s), nil
}

// sessionInput is input.session for a session read from the service, as the engine builds it.
func sessionInput(s *arbiterv1.Session) map[string]any {
	byServer := map[string]any{}
	for srv, n := range s.GetCallsByServer() {
		byServer[srv] = n
	}
	byTool := map[string]any{}
	for srv, tools := range s.GetCallsByTool() {
		counts := map[string]any{}
		for tool, n := range tools.GetTools() {
			counts[tool] = n
		}
		byTool[srv] = counts
	}
	history := []any{}
	for _, h := range s.GetHistory() {
		history = append(history, map[string]any{"server": h.GetServer(), "tool": h.GetTool(), "method": h.GetMethod(), "at": stampOrEmpty(h.GetAt())})
	}
	return map[string]any{
		"id":         s.GetId(),
		"status":     strings.ToLower(strings.TrimPrefix(s.GetStatus().String(), "SESSION_STATUS_")),
		"created_at": stampOrEmpty(s.GetCreatedAt()),
		"expires_at": stampOrEmpty(s.GetExpiresAt()),
		"renewals":   s.GetRenewals(),
		"client_id":  s.GetClientId(),
		"subject_id": s.GetSubjectId(),
		"servers":    stringsOrEmpty(s.GetServers()),
		"calls":      map[string]any{"total": s.GetCallsTotal(), "by_server": byServer, "by_tool": byTool},
		"labels":     stringsOrEmpty(s.GetLabels()),
		"history":    history,
		"end_reason": s.GetEndReason(),
	}
}

func stampOrEmpty(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func stringsOrEmpty(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// readBundle reads a bundle file with OPA's bundle reader. Signatures are not verified: eval
// shows what a policy decides, it does not activate anything.
func readBundle(path string) (engine.Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return engine.Policy{}, fmt.Errorf("--bundle: %w", err)
	}
	defer f.Close()
	b, err := bundle.NewReader(f).
		WithRegoVersion(ast.RegoV1).
		WithSizeLimitBytes(maxEvalBundleFileBytes).
		WithSkipBundleVerification(true).
		Read()
	if err != nil {
		return engine.Policy{}, fmt.Errorf("--bundle %s: %w", path, err)
	}
	return engine.PolicyFromBundle("bundle", &b), nil
}

// printExplanation prints why: the policy's result document, the rule behind each reason,
// and every rule that held, in the order it first did.
func printExplanation(w io.Writer, ex engine.Explanation) {
	fmt.Fprintln(w)
	if ex.EngineReason != "" {
		fmt.Fprintf(w, "no policy ran: %s\n", ex.EngineReason)
		return
	}
	if ex.Note != "" {
		fmt.Fprintf(w, "note: %s (see \"How a policy is evaluated\" in the policy guide)\n", ex.Note)
	}
	if ex.Error != "" {
		fmt.Fprintf(w, "policy error: %s\n", ex.Error)
	}
	if ex.Result != nil {
		res, _ := json.Marshal(ex.Result)
		fmt.Fprintf(w, "policy result:\n  %s\n", res)
	}
	if len(ex.Reasons) > 0 {
		fmt.Fprintln(w, "\nreasons:")
	}
	for _, r := range ex.Reasons {
		fmt.Fprintf(w, "  %s: %s\n", r.Code, r.Message)
		if r.Rule.Name == "" {
			fmt.Fprintln(w, "    (no rule produced this reason as a value)")
			continue
		}
		fmt.Fprintf(w, "    by %s at %s, because:\n", r.Rule.Name, r.Rule.Location)
		for _, c := range r.Rule.Conditions {
			fmt.Fprintf(w, "      %s\n", indentLines(c, "      "))
		}
	}
	if len(ex.Rules) > 0 {
		fmt.Fprintln(w, "\nrules that held, in evaluation order:")
	}
	width := 0
	for _, h := range ex.Rules {
		width = max(width, len(h.Location))
	}
	for _, h := range ex.Rules {
		var desc string
		switch {
		case h.Default:
			desc = fmt.Sprintf("%s = %s (default)", h.Name, h.Value)
		case h.Function:
			desc = fmt.Sprintf("%s(...) = %s", h.Name, h.Value)
		case h.Element:
			desc = fmt.Sprintf("%s contains %s", h.Name, h.Value)
		case h.Value == "":
			desc = h.Name
		default:
			desc = fmt.Sprintf("%s = %s", h.Name, h.Value)
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width, h.Location, desc)
	}
}

func indentLines(s, indent string) string {
	return strings.ReplaceAll(s, "\n", "\n"+indent)
}
