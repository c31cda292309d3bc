package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/arbiter-mcp/arbiter/bundles"
)

// Ways the swap scenario activates a new revision.
const (
	// SwapViaPush pushes a bundle over the bundle API, as an operator does.
	SwapViaPush = "push"
	// SwapViaEngine calls the engine's Activate in the server (no bundle API involved).
	SwapViaEngine = "engine"
)

// BundlePusher activates revisions by pushing bundles: PUT /v1/bundles/{name} with a
// .tar.gz built by bundles.Build, as `arbiter bundle push` sends it.
type BundlePusher struct {
	url     string
	client  *http.Client
	bundles [][]byte // bundles[i] is revision i+1
}

// NewBundlePusher builds revisions 1..n of the harness policy as bundles for the bundle API
// at adminAddr. Building happens now, so that pushing under load costs the generator little.
func NewBundlePusher(adminAddr, name string, n int) (*BundlePusher, error) {
	p := &BundlePusher{url: "http://" + adminAddr + "/v1/bundles/" + name, client: &http.Client{Timeout: time.Minute}}
	for rev := 1; rev <= n; rev++ {
		dir, err := os.MkdirTemp("", "arbiter-bench-bundle")
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		_, err = WritePolicyDir(dir, rev)
		if err == nil {
			err = bundles.Build(dir, bundles.BuildOptions{Revision: fmt.Sprintf("r%d", rev)}, &buf)
		}
		os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("build bundle r%d: %w", rev, err)
		}
		p.bundles = append(p.bundles, buf.Bytes())
	}
	return p, nil
}

// Activate pushes revision rev (1-based; past the last built, the revisions repeat). Took is
// the push's round trip: read, compile, prepare, probe and swap in the server.
func (p *BundlePusher) Activate(ctx context.Context, rev int) (ActivateResult, error) {
	raw := p.bundles[(rev-1)%len(p.bundles)]
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.url, bytes.NewReader(raw))
	if err != nil {
		return ActivateResult{}, err
	}
	req.Header.Set("Content-Type", "application/gzip")
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return ActivateResult{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return ActivateResult{}, fmt.Errorf("push r%d: %s: %s", rev, resp.Status, bytes.TrimSpace(body))
	}
	var ans struct {
		PolicyRevision string `json:"policy_revision"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return ActivateResult{}, fmt.Errorf("push r%d: %w", rev, err)
	}
	return ActivateResult{Revision: ans.PolicyRevision, Took: took}, nil
}
