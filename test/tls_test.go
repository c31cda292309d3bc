package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestAdminTLS: with a certificate the admin listener speaks HTTPS only.
func TestAdminTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	srv := serveBinary(t, "--admin-tls-cert", certFile, "--admin-tls-key", keyFile)
	pool := trusting(t, certFile)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + srv.adminAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("https /healthz: %s", resp.Status)
	}
	if resp, err := http.Get("http://" + srv.adminAddr + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		t.Fatal("plain HTTP must not be served when TLS is configured")
	}

	// arbiter bundle push reaches it with --tls-ca, and only over https.
	bundleFile := filepath.Join(t.TempDir(), "b.tar.gz")
	if out, err := exec.Command(arbiterBinary(t), "bundle", "build", "--revision", "1", "-o", bundleFile, writePolicyDir(t, "tls")).CombinedOutput(); err != nil {
		t.Fatalf("bundle build: %v %s", err, out)
	}
	push := func(url string, extra ...string) (string, error) {
		cmd := exec.Command(arbiterBinary(t), append([]string{"bundle", "push", bundleFile, "--name", "policy", "--url", url}, extra...)...)
		cmd.Env = append(os.Environ(), "ARBITER_TLS_CA=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := push("https://"+srv.adminAddr, "--tls-ca", certFile); err != nil || !strings.Contains(out, "policy@1") {
		t.Fatalf("push over https with --tls-ca: %v %s", err, out)
	}
	if out, err := push("https://" + srv.adminAddr); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("push trusting only the system's roots: %v %s", err, out)
	}
	if out, err := push("http://"+srv.adminAddr, "--tls-ca", certFile); err == nil || !strings.Contains(out, "https://") {
		t.Fatalf("--tls-ca with an http URL: %v %s", err, out)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key, as PEM files.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "arbiter-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

// trusting is a pool holding the certificate in certFile.
func trusting(t *testing.T, certFile string) *x509.CertPool {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", certFile)
	}
	return pool
}

// TestServeGRPCTLS: with --grpc-tls-cert/--grpc-tls-key the gRPC listener speaks TLS only, and
// the admin commands reach it with --tls-ca.
func TestServeGRPCTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	tokens := filepath.Join(t.TempDir(), "admin.tokens")
	os.WriteFile(tokens, []byte("ops "+adminToken+"\n"), 0o600)
	srv := serveBinary(t, "--grpc-tls-cert", certFile, "--grpc-tls-key", keyFile, "--admin-token-file", tokens)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pool := trusting(t, certFile)
	conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over TLS: %v %v", h, err)
	}

	plain, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if _, err := healthpb.NewHealthClient(plain).Check(short, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("a plaintext client was answered by a TLS listener")
	}

	list := func(extra ...string) ([]byte, error) {
		args := append([]string{"sessions", "list", "--addr", srv.grpcAddr, "--token-file", tokens}, extra...)
		cmd := exec.CommandContext(ctx, arbiterBinary(t), args...)
		cmd.Env = append(os.Environ(), "ARBITER_TLS_CA=", "ARBITER_TLS=")
		return cmd.CombinedOutput()
	}
	if out, err := list("--tls-ca", certFile); err != nil {
		t.Fatalf("sessions list --tls-ca: %v %s", err, out)
	}
	if out, err := list(); err == nil {
		t.Fatalf("sessions list in plaintext against a TLS listener succeeded: %s", out)
	}
	if out, err := list("--tls"); err == nil {
		t.Fatalf("sessions list trusting only the system roots accepted a self-signed certificate: %s", out)
	}

	// Off loopback, TLS is enough: no --insecure-plaintext needed.
	serveBinary(t, "--grpc-addr", "0.0.0.0:0", "--grpc-tls-cert", certFile, "--grpc-tls-key", keyFile, "--admin-token-file", tokens)

	out, err := exec.CommandContext(ctx, arbiterBinary(t), "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--grpc-tls-cert", certFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "go together") {
		t.Errorf("--grpc-tls-cert without a key: %v %s", err, out)
	}
	// A certificate that cannot be loaded stops serve before it serves, naming the flag.
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, prefix := range []string{"grpc", "admin"} {
		out, err := exec.CommandContext(ctx, arbiterBinary(t), "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
			"--"+prefix+"-tls-cert", notPEM, "--"+prefix+"-tls-key", keyFile).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--"+prefix+"-tls-cert") || strings.Contains(string(out), "arbiter serving") {
			t.Errorf("--%s-tls-cert not PEM: %v %s", prefix, err, out)
		}
	}
}
