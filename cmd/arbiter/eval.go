package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/arbiter-mcp/arbiter/engine"
)

func evalCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inputPath := fs.String("input", "", "JSON file holding the policy input document (required; - for stdin)")
	policyDir := fs.String("policy", "", "directory of Rego modules and data.json (default: the embedded policy)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *inputPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: arbiter eval --input FILE [--policy DIR]")
		return errUsage
	}
	var raw []byte
	var err error
	if *inputPath == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(*inputPath)
	}
	if err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var input map[string]any
	if err := dec.Decode(&input); err != nil || input == nil {
		return fmt.Errorf("--input %s: not a JSON object: %v", *inputPath, err)
	}
	pol, err := loadPolicy(*policyDir)
	if err != nil {
		return err
	}
	// Policy errors deny, as in the service; the author sees the detail on stderr.
	eng, err := engine.New(ctx, engine.Config{Logger: slog.New(slog.NewTextHandler(stderr, nil))}, pol)
	if err != nil {
		return fmt.Errorf("activate policy: %w", err)
	}
	d, err := eng.EvaluateInput(ctx, input)
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}
