package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"

	"github.com/arbiter-mcp/arbiter/bundles"
)

const bundleUsage = `usage: arbiter bundle COMMAND

  build DIR -o FILE [--revision R] [--signing-key K [--signing-alg RS256] [--key-id default]]
        package a directory of *.rego, data.json and an optional .manifest as an OPA bundle
  inspect FILE [--verification-key K [--verification-alg RS256] [--key-id default]]
        show revision, roots, files and signature; verify it when a key is given
  push FILE --name NAME [--url http://127.0.0.1:9192] [--token-file T] [--tls-ca CA.pem]
        activate it on a running service (PUT /v1/bundles/NAME)
`

func bundleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, bundleUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("bundle "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output file (build)")
	revision := fs.String("revision", "", "manifest revision (build)")
	signingKey := fs.String("signing-key", "", "private key (PEM file) or HMAC secret file to sign with (build)")
	signingAlg := fs.String("signing-alg", "RS256", "signing algorithm (build)")
	verifyKey := fs.String("verification-key", "", "public key (PEM file) or HMAC secret file to verify with (inspect)")
	verifyAlg := fs.String("verification-alg", "RS256", "verification algorithm (inspect)")
	keyID := fs.String("key-id", "default", "key id in the signature (build, inspect)")
	name := fs.String("name", "", "bundle name on the service (push)")
	url := fs.String("url", envOr("ARBITER_ADMIN_URL", "http://127.0.0.1:9192"), "admin listener of the service (push; env ARBITER_ADMIN_URL)")
	tokenFile := fs.String("token-file", os.Getenv("ARBITER_TOKEN_FILE"), "admin token file (push; env ARBITER_TOKEN_FILE)")
	tlsCA := fs.String("tls-ca", os.Getenv("ARBITER_TLS_CA"), "trust the CA certificates (PEM) in this file for an https --url (push; env ARBITER_TLS_CA)")
	if err := fs.Parse(reorder(fs, args[1:])); err != nil {
		return errUsage
	}
	switch args[0] {
	case "build":
		dir, err := oneArg(fs, "DIR")
		if err != nil {
			return err
		}
		if *out == "" {
			return fmt.Errorf("-o FILE is required")
		}
		var buf bytes.Buffer
		if err := bundles.Build(dir, bundles.BuildOptions{Revision: *revision, SigningKey: *signingKey, SigningAlg: *signingAlg, KeyID: *keyID}, &buf); err != nil {
			return err
		}
		if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *out, buf.Len())
		return nil
	case "inspect":
		file, err := oneArg(fs, "FILE")
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var vc *bundle.VerificationConfig
		if *verifyKey != "" {
			key, err := keys.NewKeyConfig(*verifyKey, *verifyAlg, "")
			if err != nil {
				return fmt.Errorf("--verification-key: %w", err)
			}
			vc = bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{*keyID: key}, *keyID, "", nil)
		}
		info, err := bundles.Inspect(raw, vc)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	case "push":
		file, err := oneArg(fs, "FILE")
		if err != nil {
			return err
		}
		if *name == "" {
			return fmt.Errorf("--name NAME is required")
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(*url, "/")+"/v1/bundles/"+*name, bytes.NewReader(raw))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/gzip")
		if *tokenFile != "" {
			token, err := readToken(*tokenFile)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if *tlsCA != "" && !strings.HasPrefix(*url, "https://") {
			return fmt.Errorf("--tls-ca is for an https:// --url, not %s", *url)
		}
		cfg, err := clientTLS(*tlsCA)
		if err != nil {
			return err
		}
		client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		stdout.Write(body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("push refused: %s", resp.Status)
		}
		return nil
	default:
		fmt.Fprintf(stderr, "arbiter bundle: unknown command %q\n\n%s", args[0], bundleUsage)
		return errUsage
	}
}
