package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SelfCPU is the CPU time (user + system) this process has used so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every Linux the
// Go toolchain supports.
const clockTick = 10 * time.Millisecond

// ProcCPU is the CPU time (user + system) process pid has used so far, from
// /proc/<pid>/stat (10 ms resolution).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: fields start after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// After ')': state is field 3 of stat(5), so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(u+st) * clockTick, nil
}

// CPUMeter measures the CPU time this process and other processes use over a stretch
// of work, per unit of work done.
type CPUMeter struct {
	pids  []int
	self0 time.Duration
	proc0 []time.Duration
}

// StartCPU starts measuring this process and every pid > 0 of pids.
func StartCPU(pids ...int) (*CPUMeter, error) {
	m := &CPUMeter{pids: pids, proc0: make([]time.Duration, len(pids))}
	for i, pid := range pids {
		if pid > 0 {
			var err error
			if m.proc0[i], err = ProcCPU(pid); err != nil {
				return nil, err
			}
		}
	}
	m.self0 = SelfCPU()
	return m, nil
}

// PerOp is the CPU time used since StartCPU divided by n: this process's, and one per
// pid (0 for pids ≤ 0). With n ≤ 0 everything is 0.
func (m *CPUMeter) PerOp(n int) (self Micros, procs []Micros, err error) {
	self1 := SelfCPU()
	procs = make([]Micros, len(m.pids))
	if n <= 0 {
		return 0, procs, nil
	}
	for i, pid := range m.pids {
		if pid <= 0 {
			continue
		}
		c, err := ProcCPU(pid)
		if err != nil {
			return 0, nil, err
		}
		procs[i] = Micros((c - m.proc0[i]) / time.Duration(n))
	}
	return Micros((self1 - m.self0) / time.Duration(n)), procs, nil
}

// PeakRSS is a process's peak resident set size (VmHWM) in bytes, from
// /proc/<pid>/status; pid 0 means this process.
func PeakRSS(pid int) (int64, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return ParseVmHWM(f)
}

// ParseVmHWM reads the VmHWM line ("VmHWM:   123456 kB") of a /proc status file.
func ParseVmHWM(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmHWM: unexpected format %q", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM: %w", err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM line")
}
