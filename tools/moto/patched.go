package moto

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// motoServerPy is moto_server with DynamoDB transactions isolated and rolled back item by item (see
// the script's documentation): what the suite runs against, so that what it judges is crmsync and
// not the emulator.
//
//go:embed patched.py
var motoServerPy []byte

// PatchedServer is a patched moto_server this package started.
type PatchedServer struct {
	Endpoint string
	cmd      *exec.Cmd
	done     chan struct{}
	once     sync.Once
	dir      string
}

// StartPatched runs the patched moto_server on endpoint (http://host:port) with the Python that has
// moto installed (python3 on PATH, or $CRMSYNC_PYTHON), and waits until it answers. Its indexes
// are read-your-writes, as moto's.
func StartPatched(ctx context.Context, endpoint string) (*PatchedServer, error) {
	return StartPatchedWithLag(ctx, endpoint, 0)
}

// LaggedHeader is the answer header by which the patched moto_server marks a Query of an index
// that saw items as they were before writes inside the lag (its value: how many).
const LaggedHeader = "X-Crmsync-Lagged"

// StartPatchedWithLag is StartPatched with index lag: every Query of a global secondary index sees
// the items as they were lag ago, as DynamoDB's asynchronously updated indexes may (0: none).
func StartPatchedWithLag(ctx context.Context, endpoint string, lag time.Duration) (*PatchedServer, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("moto endpoint %q: want http://host:port", endpoint)
	}
	py := os.Getenv("CRMSYNC_PYTHON")
	if py == "" {
		py = "python3"
	}
	if _, err := exec.LookPath(py); err != nil {
		return nil, fmt.Errorf("%s not found: the reliability suite runs moto from Python (%s)", py, InstallHint)
	}
	dir, err := os.MkdirTemp("", "crmsync-moto-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "motoserver.py")
	if err := os.WriteFile(script, motoServerPy, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(py, script, "-H", u.Hostname(), "-p", u.Port())
	cmd.Env = append(os.Environ(), "MOTO_ALLOW_NONEXISTENT_REGION=true", fmt.Sprintf("CRMSYNC_INDEX_LAG_MS=%d", lag.Milliseconds()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out := &tail{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start patched moto_server: %w", err)
	}
	s := &PatchedServer{Endpoint: endpoint, cmd: cmd, done: make(chan struct{}), dir: dir}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for !Answers(ctx, endpoint) {
		select {
		case <-s.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("patched moto_server on %s exited at start: %s (%s)", endpoint, out.String(), InstallHint)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("patched moto_server did not answer within 60s")
		}
	}
	return s, nil
}

// Stop ends the server and its process group.
func (s *PatchedServer) Stop() {
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
		os.RemoveAll(s.dir)
	})
}

// tail keeps the last few KiB a process wrote, for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
