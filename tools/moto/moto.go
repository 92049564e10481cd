// Package moto owns running the local AWS API emulator, moto_server: finding it, starting it on an
// address, waiting until it answers, and stopping it (with every child process) on exit. Tests get
// an endpoint through ForTest, which fails the test, never skips it, when moto cannot run.
package moto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Version is the moto release the local stack and the reliability suite's patched moto_server
// (tools/moto/patched.py, which reaches into moto's internals) are written against. The
// Makefile's check-moto target checks it; keep the three in step when moving to a new moto.
const Version = "5.2.1"

// InstallHint says exactly how to get moto_server when it is missing.
const InstallHint = "moto_server is not installed: run `pip install 'moto[server]==" + Version + "'` (Python 3.9+), " +
	"then make sure `moto_server` is on PATH"

// ErrNotInstalled reports that moto_server is not on PATH.
var ErrNotInstalled = errors.New(InstallHint)

// Server is a moto_server process this package started.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
	done     chan struct{}
	once     sync.Once
}

// Answers reports whether an AWS-like endpoint answers HTTP at endpoint.
func Answers(ctx context.Context, endpoint string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/moto-api/", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// Start runs moto_server on the endpoint's host and port and waits until it answers.
func Start(ctx context.Context, endpoint string) (*Server, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("moto endpoint %q: want http://host:port", endpoint)
	}
	cmd := exec.Command(bin, "-H", u.Hostname(), "-p", u.Port())
	cmd.Env = append(os.Environ(), "MOTO_ALLOW_NONEXISTENT_REGION=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start moto_server: %w", err)
	}
	s := &Server{Endpoint: endpoint, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for !Answers(ctx, endpoint) {
		select {
		case <-s.done:
			return nil, fmt.Errorf("moto_server on %s exited at start (is the port taken?)", endpoint)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("moto_server on %s did not answer within 30s", endpoint)
		}
	}
	return s, nil
}

// Stop ends moto_server and its process group, waiting for it to exit.
func (s *Server) Stop() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
	})
}

// Ensure uses the moto (or other AWS endpoint) answering at endpoint, or starts moto_server
// there. The returned Server is nil when an endpoint was already running (nothing to stop).
func Ensure(ctx context.Context, endpoint string) (*Server, error) {
	if Answers(ctx, endpoint) {
		return nil, nil
	}
	return Start(ctx, endpoint)
}

// FreeEndpoint returns http://127.0.0.1:<a free port>.
func FreeEndpoint() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}

// TestEndpointEnv names the variable through which `make test` shares one moto with every test
// package.
const TestEndpointEnv = "CRMSYNC_TEST_AWS_ENDPOINT"

var (
	shared     string
	sharedErr  error
	sharedOnce sync.Once
	sharedSrv  *Server
)

// TB is the part of testing.TB the test helpers use; declared here so the developer tool that
// links this package does not link package testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// ForTest returns an endpoint for a test: the shared one from CRMSYNC_TEST_AWS_ENDPOINT when
// set, else a moto_server started once per test binary (stopped by Cleanup in TestMain, or at
// process exit through the parent-death signal). A missing moto fails the test with the install
// hint; it never skips.
func ForTest(t TB) string {
	t.Helper()
	sharedOnce.Do(func() {
		if ep := os.Getenv(TestEndpointEnv); ep != "" {
			if !Answers(context.Background(), ep) {
				sharedErr = fmt.Errorf("%s=%s does not answer", TestEndpointEnv, ep)
				return
			}
			shared = ep
			return
		}
		ep, err := FreeEndpoint()
		if err != nil {
			sharedErr = err
			return
		}
		sharedSrv, sharedErr = Start(context.Background(), ep)
		shared = ep
	})
	if sharedErr != nil {
		t.Fatalf("local AWS (moto) unavailable: %v", sharedErr)
	}
	return shared
}

// Cleanup stops the moto_server ForTest started, if any; call it from TestMain after m.Run.
func Cleanup() { sharedSrv.Stop() }
