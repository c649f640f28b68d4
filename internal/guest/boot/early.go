package boot

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"banger/internal/guest/initrd"
)

// EarlyAgentFile is initrd.EarlyAgentFile: where banger's initramfs
// records the agent it started before systemd.
const EarlyAgentFile = initrd.EarlyAgentFile

// EarlyAgent reads the early agent's pid from file (EarlyAgentFile): 0
// when there is none, or when that process no longer runs a program whose
// name starts like comm (the kernel truncates it to 15 bytes), under
// procDir (/proc).
func EarlyAgent(file, procDir, comm string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	c, err := os.ReadFile(fmt.Sprintf("%s/%d/comm", procDir, pid))
	if err != nil {
		return 0
	}
	name := strings.TrimSpace(string(c))
	if name == "" || !strings.HasPrefix(comm, name) {
		return 0
	}
	return pid
}

// WaitEarlyAgent waits, polling every poll, until alive says the early
// agent is gone or ctx ends.
func WaitEarlyAgent(ctx context.Context, alive func() bool, poll time.Duration) error {
	for alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}
