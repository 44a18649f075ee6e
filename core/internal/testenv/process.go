package testenv

import (
	"bufio"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Core is `larkway serve` running as a real process.
type Core struct {
	Cmd  *exec.Cmd
	Addr string
	Done chan error

	mu   sync.Mutex
	logs strings.Builder
}

// Logs returns what the process logged so far.
func (c *Core) Logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs.String()
}

// StartCore runs `bin serve --config cfgPath`, waits until /readyz answers
// 200 and returns it; the process is killed when the test ends.
func StartCore(t testing.TB, bin, cfgPath string) *Core {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	// Its own process group, so a kill reaches its plugins too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Core{Cmd: cmd, Done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.logs.WriteString(line + "\n")
			c.mu.Unlock()
			if strings.Contains(line, `"msg":"listening"`) {
				if i := strings.Index(line, `"addr":"`); i >= 0 {
					rest := line[i+8:]
					select {
					case addrc <- rest[:strings.Index(rest, `"`)]:
					default:
					}
				}
			}
		}
		c.Done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	select {
	case c.Addr = <-addrc:
	case err := <-c.Done:
		t.Fatalf("core exited: %v\n%s", err, c.Logs())
	case <-time.After(60 * time.Second):
		t.Fatal("core never listened")
	}
	Eventually(t, 60*time.Second, "core never ready", func() bool {
		resp, err := http.Get("http://" + c.Addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return c
}

// Kill sends sig to the core's whole process group (its plugins included
// for SIGKILL, as when a pod dies).
func (c *Core) Kill(sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return syscall.Kill(-c.Cmd.Process.Pid, sig)
	}
	return c.Cmd.Process.Signal(sig)
}
