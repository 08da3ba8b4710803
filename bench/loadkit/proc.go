package loadkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc on every
// architecture Go supports.
const clockTicks = 100

// ProcRSSKiB returns the resident set size (VmRSS) of pid in KiB.
func ProcRSSKiB(pid int) (int64, error) { return procStatusKiB(pid, "VmRSS:") }

// ProcHWMKiB returns the largest resident set size pid has had (VmHWM) in
// KiB: the kernel's own peak, which no sampling interval can miss.
func ProcHWMKiB(pid int) (int64, error) { return procStatusKiB(pid, "VmHWM:") }

// procStatusKiB reads field, a size in KiB, from pid's /proc status.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(b, field)
}

func parseStatusKiB(status []byte, field string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// ProcCPUSeconds returns the user plus system CPU time pid has used.
func ProcCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

func parseStatCPU(stat []byte) (float64, error) {
	// The command name is in parentheses and may hold spaces: split after
	// the last ')'. Fields from there: state(3) ... utime(14) stime(15).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// HostCPU is a reading of the machine's CPU time counters.
type HostCPU struct{ busy, total int64 }

// ReadHostCPU reads the aggregate line of /proc/stat.
func ReadHostCPU() (HostCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return HostCPU{}, err
	}
	return parseHostCPU(b)
}

func parseHostCPU(b []byte) (HostCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return HostCPU{}, errors.New("malformed /proc/stat")
	}
	var h HostCPU
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return HostCPU{}, err
		}
		// guest and guest_nice (fields 9, 10) are already in user and nice.
		if i >= 8 {
			break
		}
		h.total += v
		if i != 3 && i != 4 { // idle, iowait
			h.busy += v
		}
	}
	return h, nil
}

// BusyPct returns the share of CPU time spent busy since an earlier reading,
// over all cores (100 means every core busy).
func (h HostCPU) BusyPct(earlier HostCPU) float64 {
	dt := h.total - earlier.total
	if dt <= 0 {
		return 0
	}
	return float64(h.busy-earlier.busy) / float64(dt) * 100
}

// SelfCPUSeconds returns the CPU time this process has used.
func SelfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// Sampler watches a run: the host's CPU, this process's CPU and, when pid
// is positive, another process's CPU and largest RSS, sampled every
// interval. Watched processes (by name) have their CPU time measured too.
type Sampler struct {
	pid      int
	start    time.Time
	host0    HostCPU
	self0    float64
	proc0    float64
	watch    map[string]int
	watch0   map[string]float64
	mu       sync.Mutex
	maxRSS   int64
	stop     context.CancelFunc
	done     chan struct{}
	procErrs int
}

// StartSampler starts sampling; call Stop to get the figures. watch names
// other processes whose CPU time to measure (nil for none).
func StartSampler(pid int, interval time.Duration, watch map[string]int) *Sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sampler{pid: pid, start: time.Now(), self0: SelfCPUSeconds(), stop: cancel, done: make(chan struct{}),
		watch: watch, watch0: map[string]float64{}}
	s.host0, _ = ReadHostCPU()
	for name, p := range watch {
		if c, err := ProcCPUSeconds(p); err == nil {
			s.watch0[name] = c
		}
	}
	if pid > 0 {
		s.proc0, _ = ProcCPUSeconds(pid)
		s.sampleRSS()
	}
	go func() {
		defer close(s.done)
		if pid <= 0 {
			<-ctx.Done()
			return
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.sampleRSS()
			}
		}
	}()
	return s
}

func (s *Sampler) sampleRSS() {
	kib, err := ProcRSSKiB(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.procErrs++
		return
	}
	s.maxRSS = max(s.maxRSS, kib)
}

// Stop ends sampling and fills run's process figures.
func (s *Sampler) Stop(run *Run) {
	s.stop()
	<-s.done
	run.ElapsedS = time.Since(s.start).Seconds()
	run.LoadgenCPUS = SelfCPUSeconds() - s.self0
	if h, err := ReadHostCPU(); err == nil {
		run.HostBusyPct = h.BusyPct(s.host0)
		run.HostCPUS = float64(h.busy-s.host0.busy) / clockTicks
	}
	for name, p := range s.watch {
		c0, ok := s.watch0[name]
		if c, err := ProcCPUSeconds(p); ok && err == nil {
			if run.ProcCPUS == nil {
				run.ProcCPUS = map[string]float64{}
			}
			run.ProcCPUS[name] = c - c0
		}
	}
	if s.pid > 0 {
		s.sampleRSS()
		if c, err := ProcCPUSeconds(s.pid); err == nil {
			run.WorkerCPUS = c - s.proc0
		}
		s.mu.Lock()
		run.WorkerRSSMaxMiB = float64(s.maxRSS) / 1024
		s.mu.Unlock()
	}
}

// PIDs is a flag.Value of repeated name=pid pairs: the processes a Sampler
// watches.
type PIDs map[string]int

// String implements flag.Value: the pairs as name=pid, comma separated.
func (p PIDs) String() string {
	var parts []string
	for k, v := range p {
		parts = append(parts, k+"="+strconv.Itoa(v))
	}
	return strings.Join(parts, ",")
}

// Set adds one name=pid.
func (p PIDs) Set(s string) error {
	name, v, ok := strings.Cut(s, "=")
	pid, err := strconv.Atoi(v)
	if !ok || name == "" || err != nil || pid <= 0 {
		return fmt.Errorf("%q: want name=pid", s)
	}
	p[name] = pid
	return nil
}
